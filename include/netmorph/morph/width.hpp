#ifndef NETMORPH_MORPH_WIDTH_HPP
#define NETMORPH_MORPH_WIDTH_HPP

/// \file width.hpp
/// Width morphing (paper §3.4.1, DESIGN §4): grow a layer from `C` to `C' >= C` output channels
/// while the next layer's input grows to match, preserving the function for any activation.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/ops/batch_norm.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/ops/dense.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <vector>

namespace netmorph {

/// How the new channels are filled.
enum class width_rule {
  netmorph,  ///< new channels: noise on one side, zeros on the other (exact for any activation)
  net2net    ///< replicate random existing channels and divide their outgoing weights
};

/// Options of `widen`.
struct widen_options {
  index_type new_channels = 0;  ///< C', at least the current C
  width_rule rule = width_rule::netmorph;
  /// The activation between the layer and the next one; decides which side may be zeroed
  /// (the incoming side only when phi(0) = 0) and is used on the probes.
  activation_fn phi{activation_kind::relu, 0.01};
  std::uint64_t seed = 0;
  double noise = 1.0;          ///< std of the new non-zero side, relative to the existing weights
  bool permute = true;         ///< randomly permute the channels (consistently everywhere)
  index_type probe_count = 4;  ///< random inputs on which the child is compared with the parent
  index_type probe_size = 0;   ///< spatial size of conv probes; 0 chooses one
};

/// What a width morph did.
struct widen_report {
  index_type old_channels = 0, new_channels = 0;
  width_rule rule = width_rule::netmorph;
  bool zeroed_incoming = false;  ///< NetMorph zeroed the new incoming side (else the outgoing)
  double max_output_error = 0;   ///< on the probes, through the activation and the next layer
  double relative_output_error = 0;
  double nonzero_layer = 0, nonzero_next = 0;  ///< fraction of non-zero weights after the morph
  double std_layer = 0, std_next = 0;          ///< std of the weights after the morph
  double seconds = 0;
};

/// A widened layer, its next layer, the batch norm between them (if any) and the permutation:
/// new channel `p` is old/new channel `permutation[p]` (values >= C are the new ones).
template <typename Scalar, typename Layer, typename Next>
struct widen_result {
  Layer layer;
  Next next;
  std::optional<batch_norm_weights<Scalar>> bn;
  std::vector<index_type> permutation;
  /// For each new channel position, the old channel whose values it carries (a permuted old
  /// channel or a Net2Net replica), or -1 for a channel NetMorph filled anew.
  std::vector<index_type> source;
  widen_report report;
};

namespace detail {

template <typename T>
struct non_deduced {
  using type = T;
};

/// Channel-sliced view of the parameters involved: incoming rows (one per channel) and, in the
/// next layer's weight, `groups` blocks of `span` contiguous values owned by each channel.
template <typename Scalar>
struct width_parts {
  tensor<Scalar> in_w;    // (C, rest...)
  tensor<Scalar> in_b;    // (C) or empty
  tensor<Scalar> out_w;   // next weight
  index_type groups = 0;  // number of output rows of next
  index_type span = 0;    // values per channel per output row (K*K, or H*W after a flatten)
};

template <typename Scalar>
void widen_parts(width_parts<Scalar>& p, std::optional<batch_norm_weights<Scalar>>& bn,
                 const widen_options& opt, widen_report& rep, std::vector<index_type>& perm,
                 std::vector<index_type>& source_out) {
  const index_type c = p.in_w.dim(0), cn = opt.new_channels;
  const index_type in_row = p.in_w.size() / std::max<index_type>(c, 1);
  const index_type out_cols = c * p.span;  // per output row of next
  std::mt19937_64 rng(opt.seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  rep.old_channels = c;
  rep.new_channels = cn;
  rep.rule = opt.rule;

  shape_type in_shape = p.in_w.shape();
  in_shape[0] = cn;
  tensor<Scalar> in_w(in_shape);
  tensor<Scalar> in_b = p.in_b.empty() ? tensor<Scalar>() : tensor<Scalar>({cn});
  shape_type out_shape = p.out_w.shape();
  // The next layer's weight is (groups, C*span) in memory order; only the C axis grows.
  tensor<Scalar> out_w({p.groups, cn * p.span});
  std::copy(p.in_w.begin(), p.in_w.end(), in_w.begin());
  if (!in_b.empty()) std::copy(p.in_b.begin(), p.in_b.end(), in_b.begin());
  for (index_type g = 0; g < p.groups; ++g)
    std::copy(p.out_w.data() + g * out_cols, p.out_w.data() + (g + 1) * out_cols,
              out_w.data() + g * cn * p.span);
  std::optional<batch_norm_weights<Scalar>> nbn;
  if (bn) {
    nbn = batch_norm_weights<Scalar>::identity(cn, bn->eps);
    for (index_type ch = 0; ch < c; ++ch) {
      nbn->gamma(ch) = bn->gamma(ch);
      nbn->beta(ch) = bn->beta(ch);
      nbn->running_mean(ch) = bn->running_mean(ch);
      nbn->running_var(ch) = bn->running_var(ch);
    }
  }

  if (opt.rule == width_rule::netmorph) {
    // Zero the side with fewer parameters when that is exact (phi(0) = 0, and a zero channel
    // through batch norm with mean 0 and beta 0 stays 0); noise on the other side.
    const index_type incoming = in_row + (in_b.empty() ? 0 : 1), outgoing = p.groups * p.span;
    rep.zeroed_incoming = incoming < outgoing && opt.phi.zero_at_zero();
    if (rep.zeroed_incoming) {
      const double sd = opt.noise * stddev(p.out_w);
      for (index_type g = 0; g < p.groups; ++g)
        for (index_type j = c * p.span; j < cn * p.span; ++j)
          out_w.data()[g * cn * p.span + j] = static_cast<Scalar>(sd * normal(rng));
    } else {
      const double sd = opt.noise * stddev(p.in_w);
      const double sb = in_b.empty() ? 0.0 : opt.noise * stddev(p.in_b);
      for (index_type j = c * in_row; j < cn * in_row; ++j)
        in_w.data()[j] = static_cast<Scalar>(sd * normal(rng));
      for (index_type ch = c; ch < cn && !in_b.empty(); ++ch)
        in_b(ch) = static_cast<Scalar>(sb * normal(rng));
    }
  } else {
    // Net2Net: channel j >= C copies a random existing channel; the outgoing weights of every
    // copy (and of the original) are divided by the number of copies.
    std::vector<index_type>& source = source_out;
    source.assign(static_cast<std::size_t>(cn), 0);
    std::vector<index_type> count(static_cast<std::size_t>(c), 1);
    std::uniform_int_distribution<index_type> pick(0, c - 1);
    for (index_type j = 0; j < cn; ++j) {
      const index_type s = j < c ? j : pick(rng);
      source[static_cast<std::size_t>(j)] = s;
      if (j >= c) ++count[static_cast<std::size_t>(s)];
    }
    for (index_type j = c; j < cn; ++j) {
      const index_type s = source[static_cast<std::size_t>(j)];
      std::copy(p.in_w.data() + s * in_row, p.in_w.data() + (s + 1) * in_row,
                in_w.data() + j * in_row);
      if (!in_b.empty()) in_b(j) = p.in_b(s);
      if (nbn) {
        nbn->gamma(j) = bn->gamma(s);
        nbn->beta(j) = bn->beta(s);
        nbn->running_mean(j) = bn->running_mean(s);
        nbn->running_var(j) = bn->running_var(s);
      }
    }
    for (index_type g = 0; g < p.groups; ++g)
      for (index_type j = 0; j < cn; ++j) {
        const index_type s = source[static_cast<std::size_t>(j)];
        const double div = double(count[static_cast<std::size_t>(s)]);
        for (index_type t = 0; t < p.span; ++t)
          out_w.data()[(g * cn + j) * p.span + t] =
              static_cast<Scalar>(double(p.out_w.data()[(g * c + s) * p.span + t]) / div);
      }
  }

  if (opt.rule == width_rule::netmorph) {
    source_out.resize(static_cast<std::size_t>(cn));
    for (index_type j = 0; j < cn; ++j)
      source_out[static_cast<std::size_t>(j)] = j < c ? j : -1;
  }
  perm.resize(static_cast<std::size_t>(cn));
  std::iota(perm.begin(), perm.end(), index_type(0));
  if (opt.permute) std::shuffle(perm.begin(), perm.end(), rng);
  {
    std::vector<index_type> permuted(static_cast<std::size_t>(cn));
    for (index_type q = 0; q < cn; ++q)
      permuted[static_cast<std::size_t>(q)] =
          source_out[static_cast<std::size_t>(perm[static_cast<std::size_t>(q)])];
    source_out = std::move(permuted);
  }
  // Apply the permutation to every per-channel quantity.
  tensor<Scalar> pw(in_shape), po({p.groups, cn * p.span});
  tensor<Scalar> pb = in_b.empty() ? tensor<Scalar>() : tensor<Scalar>({cn});
  std::optional<batch_norm_weights<Scalar>> pbn = nbn;
  for (index_type q = 0; q < cn; ++q) {
    const index_type s = perm[static_cast<std::size_t>(q)];
    std::copy(in_w.data() + s * in_row, in_w.data() + (s + 1) * in_row, pw.data() + q * in_row);
    if (!pb.empty()) pb(q) = in_b(s);
    if (pbn) {
      pbn->gamma(q) = nbn->gamma(s);
      pbn->beta(q) = nbn->beta(s);
      pbn->running_mean(q) = nbn->running_mean(s);
      pbn->running_var(q) = nbn->running_var(s);
    }
    for (index_type g = 0; g < p.groups; ++g)
      std::copy(out_w.data() + (g * cn + s) * p.span, out_w.data() + (g * cn + s + 1) * p.span,
                po.data() + (g * cn + q) * p.span);
  }
  p.in_w = std::move(pw);
  p.in_b = std::move(pb);
  // Restore the next layer's shape with the channel axis grown.
  if (out_shape.size() == 4) {
    out_shape[1] = cn;
  } else {
    out_shape[1] = cn * p.span;
  }
  p.out_w = std::move(po).reshape(out_shape);
  bn = std::move(pbn);
}

template <typename Scalar>
void check_widen_common(index_type c, const widen_options& opt,
                        const std::optional<batch_norm_weights<Scalar>>& bn) {
  require<value_error>(opt.new_channels >= c, "widen: cannot shrink from ", c, " to ",
                       opt.new_channels, " channels");
  require<value_error>(opt.noise >= 0 && std::isfinite(opt.noise),
                       "widen: noise must be >= 0 and finite, got ", opt.noise);
  require<value_error>(opt.probe_count >= 0 && opt.probe_size >= 0,
                       "widen: probe_count and probe_size must be >= 0");
  if (bn) {
    check_batch_norm(*bn, c, "widen");
    require_finite(bn->gamma, "widen", "batch-norm gamma");
    require_finite(bn->beta, "widen", "batch-norm beta");
    require_finite(bn->running_mean, "widen", "batch-norm running mean");
    require_finite(bn->running_var, "widen", "batch-norm running var");
  }
}

template <typename Result>
void finish_widen_report(Result& r, std::chrono::steady_clock::time_point t0) {
  r.report.nonzero_layer = nonzero_fraction(r.layer.weight);
  r.report.nonzero_next = nonzero_fraction(r.next.weight);
  r.report.std_layer = stddev(r.layer.weight);
  r.report.std_next = stddev(r.next.weight);
  r.report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <typename Scalar>
tensor<Scalar> between(tensor<Scalar> h, const std::optional<batch_norm_weights<Scalar>>& bn,
                       const activation_fn& phi) {
  if (bn) h = batch_norm_inference(std::move(h), *bn);
  return apply(phi, std::move(h));
}

}  // namespace detail

/// Width morph of a convolution followed (through an optional batch norm and the activation
/// `opt.phi`) by another convolution. The first layer's output channels and the next layer's
/// input channels grow from `C` to `opt.new_channels`.
/// \throws shape_error when the layers do not chain; value_error on a shrinking width, NaN/Inf
///         weights or bad options.
template <typename Scalar>
widen_result<Scalar, conv2d_weights<Scalar>, conv2d_weights<Scalar>> widen(
    const conv2d_weights<Scalar>& layer, const conv2d_weights<Scalar>& next,
    const widen_options& opt,
    typename detail::non_deduced<std::optional<batch_norm_weights<Scalar>>>::type bn =
        std::nullopt) {
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_conv2d_operands(
      tensor<Scalar>({1, layer.weight.rank() == 4 ? layer.weight.dim(1) : 0, 1, 1}), layer.weight,
      layer.bias, "widen");
  detail::require<shape_error>(next.weight.rank() == 4,
                               "widen: next weight must be OIHW (rank 4), got shape ",
                               detail::shape_string(next.weight.shape()));
  const index_type c = layer.weight.dim(0);
  detail::require<shape_error>(next.weight.dim(1) == c, "widen: layer has ", c,
                               " output channels, next layer expects ", next.weight.dim(1));
  require_finite(layer.weight, "widen", "weight");
  require_finite(layer.bias, "widen", "bias");
  require_finite(next.weight, "widen", "next weight");
  detail::check_widen_common(c, opt, bn);
  detail::width_parts<Scalar> p{layer.weight, layer.bias, next.weight, next.weight.dim(0),
                                next.weight.dim(2) * next.weight.dim(3)};
  widen_result<Scalar, conv2d_weights<Scalar>, conv2d_weights<Scalar>> r;
  r.bn = bn;
  detail::widen_parts(p, r.bn, opt, r.report, r.permutation, r.source);
  r.layer = conv2d_weights<Scalar>{std::move(p.in_w), std::move(p.in_b), layer.options};
  r.next = conv2d_weights<Scalar>{std::move(p.out_w), next.bias, next.options};
  if (opt.probe_count > 0) {
    std::mt19937_64 rng(opt.seed ^ 0x5bd1e995u);
    const index_type k = std::max(layer.weight.dim(2), layer.weight.dim(3));
    const index_type hw =
        opt.probe_size > 0
            ? opt.probe_size
            : std::max<index_type>(k, 1) + 2 * std::max(next.weight.dim(2), next.weight.dim(3)) + 4;
    auto x = tensor<Scalar>::random_normal({opt.probe_count, layer.weight.dim(1), hw, hw}, rng);
    auto y = conv2d(detail::between(conv2d(x, layer), bn, opt.phi), next);
    auto z = conv2d(detail::between(conv2d(x, r.layer), r.bn, opt.phi), r.next);
    r.report.max_output_error = max_abs_error(z, y);
    r.report.relative_output_error = relative_error(z, y);
  }
  detail::finish_widen_report(r, t0);
  return r;
}

/// Width morph of a convolution followed by a flatten and a dense layer: each channel owns the
/// `H*W` consecutive input columns of the dense layer (NCHW flatten order).
/// \throws shape_error when the dense layer's input is not a multiple of `C`.
template <typename Scalar>
widen_result<Scalar, conv2d_weights<Scalar>, dense_weights<Scalar>> widen(
    const conv2d_weights<Scalar>& layer, const dense_weights<Scalar>& next,
    const widen_options& opt,
    typename detail::non_deduced<std::optional<batch_norm_weights<Scalar>>>::type bn =
        std::nullopt) {
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_conv2d_operands(
      tensor<Scalar>({1, layer.weight.rank() == 4 ? layer.weight.dim(1) : 0, 1, 1}), layer.weight,
      layer.bias, "widen");
  detail::require<shape_error>(next.weight.rank() == 2,
                               "widen: next dense weight must be (out, in), got shape ",
                               detail::shape_string(next.weight.shape()));
  const index_type c = layer.weight.dim(0), in = next.weight.dim(1);
  detail::require<shape_error>(c > 0 && in % c == 0 && in > 0, "widen: dense input ", in,
                               " is not a multiple of the layer's ", c,
                               " channels (each channel owns H*W columns after a flatten)");
  require_finite(layer.weight, "widen", "weight");
  require_finite(layer.bias, "widen", "bias");
  require_finite(next.weight, "widen", "next weight");
  detail::check_widen_common(c, opt, bn);
  const index_type hw_cols = in / c;
  detail::width_parts<Scalar> p{layer.weight, layer.bias, next.weight, next.weight.dim(0), hw_cols};
  widen_result<Scalar, conv2d_weights<Scalar>, dense_weights<Scalar>> r;
  r.bn = bn;
  detail::widen_parts(p, r.bn, opt, r.report, r.permutation, r.source);
  r.layer = conv2d_weights<Scalar>{std::move(p.in_w), std::move(p.in_b), layer.options};
  r.next = dense_weights<Scalar>{std::move(p.out_w), next.bias};
  if (opt.probe_count > 0) {
    // Probe with an input whose convolution output has exactly H*W = hw_cols pixels: a square
    // side when possible, else a 1-pixel-high strip.
    std::mt19937_64 rng(opt.seed ^ 0x5bd1e995u);
    index_type side = static_cast<index_type>(std::llround(std::sqrt(double(hw_cols))));
    index_type oh = side * side == hw_cols ? side : 1, ow = side * side == hw_cols ? side : hw_cols;
    const conv2d_options pp = layer.options;
    const index_type ih = (oh - 1) * pp.stride + layer.weight.dim(2) - 2 * pp.padding;
    const index_type iw = (ow - 1) * pp.stride + layer.weight.dim(3) - 2 * pp.padding;
    if (ih >= 1 && iw >= 1 && conv2d_output_size(ih, layer.weight.dim(2), pp) == oh &&
        conv2d_output_size(iw, layer.weight.dim(3), pp) == ow) {
      auto x = tensor<Scalar>::random_normal({opt.probe_count, layer.weight.dim(1), ih, iw}, rng);
      auto flat = [&](tensor<Scalar> t) {
        const index_type n = t.dim(0);
        return std::move(t).reshape({n, t.size() / n});
      };
      auto y = dense(flat(detail::between(conv2d(x, layer), bn, opt.phi)), next);
      auto z = dense(flat(detail::between(conv2d(x, r.layer), r.bn, opt.phi)), r.next);
      r.report.max_output_error = max_abs_error(z, y);
      r.report.relative_output_error = relative_error(z, y);
    } else {
      r.report.max_output_error = r.report.relative_output_error =
          std::numeric_limits<double>::quiet_NaN();  // no input size produces this layout
    }
  }
  detail::finish_widen_report(r, t0);
  return r;
}

/// Width morph of a dense layer followed by another dense layer (a batch norm over the
/// features may sit between them).
template <typename Scalar>
widen_result<Scalar, dense_weights<Scalar>, dense_weights<Scalar>> widen(
    const dense_weights<Scalar>& layer, const dense_weights<Scalar>& next, const widen_options& opt,
    typename detail::non_deduced<std::optional<batch_norm_weights<Scalar>>>::type bn =
        std::nullopt) {
  const auto t0 = std::chrono::steady_clock::now();
  detail::require<shape_error>(layer.weight.rank() == 2 && next.weight.rank() == 2,
                               "widen: dense weights must be (out, in), got shapes ",
                               detail::shape_string(layer.weight.shape()), " and ",
                               detail::shape_string(next.weight.shape()));
  const index_type c = layer.weight.dim(0);
  detail::require<shape_error>(next.weight.dim(1) == c, "widen: layer has ", c,
                               " outputs, next layer expects ", next.weight.dim(1));
  detail::require<shape_error>(layer.bias.empty() || layer.bias.shape() == shape_type{c},
                               "widen: bias must have shape (", c, "), got ",
                               detail::shape_string(layer.bias.shape()));
  require_finite(layer.weight, "widen", "weight");
  require_finite(layer.bias, "widen", "bias");
  require_finite(next.weight, "widen", "next weight");
  detail::check_widen_common(c, opt, bn);
  detail::width_parts<Scalar> p{layer.weight, layer.bias, next.weight, next.weight.dim(0), 1};
  widen_result<Scalar, dense_weights<Scalar>, dense_weights<Scalar>> r;
  r.bn = bn;
  detail::widen_parts(p, r.bn, opt, r.report, r.permutation, r.source);
  r.layer = dense_weights<Scalar>{std::move(p.in_w), std::move(p.in_b)};
  r.next = dense_weights<Scalar>{std::move(p.out_w), next.bias};
  if (opt.probe_count > 0) {
    std::mt19937_64 rng(opt.seed ^ 0x5bd1e995u);
    auto x = tensor<Scalar>::random_normal({opt.probe_count, layer.weight.dim(1)}, rng);
    auto y = dense(detail::between(dense(x, layer), bn, opt.phi), next);
    auto z = dense(detail::between(dense(x, r.layer), r.bn, opt.phi), r.next);
    r.report.max_output_error = max_abs_error(z, y);
    r.report.relative_output_error = relative_error(z, y);
  }
  detail::finish_widen_report(r, t0);
  return r;
}

}  // namespace netmorph

#endif  // NETMORPH_MORPH_WIDTH_HPP

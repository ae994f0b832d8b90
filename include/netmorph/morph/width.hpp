#ifndef NETMORPH_MORPH_WIDTH_HPP
#define NETMORPH_MORPH_WIDTH_HPP

/// \file width.hpp
/// Width morphing (paper §3.4.1, docs/DESIGN.md §4.1): grow a layer from `C` to `C' >= C` channels
/// while the next layer's input grows to match, preserving the function for any activation.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/morph/report.hpp>
#include <netmorph/ops/batch_norm.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/ops/dense.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <random>
#include <type_traits>
#include <vector>

namespace netmorph {

/// How the new channels are filled.
enum class width_rule {
  netmorph,  ///< new channels: random incoming filters, zero outgoing weights (exact for any phi)
  net2net    ///< replicate random existing channels and divide their outgoing weights
};

/// The name `morph_report::algorithm` uses: "netmorph" or "net2net".
inline const char* to_string(width_rule r) {
  return r == width_rule::netmorph ? "netmorph" : "net2net";
}

/// Options of `widen`.
struct widen_options {
  index_type new_channels = 0;  ///< C', at least the current C
  width_rule rule = width_rule::netmorph;
  /// The activation between the layer and the next one, used by the probes (unset: the
  /// identity). Neither rule depends on it: both are exact for any activation.
  std::optional<activation_fn> phi;
  std::uint64_t seed = 0;
  double noise = 1.0;   ///< std of the new non-zero side, relative to the existing weights
  bool permute = true;  ///< randomly permute the channels (consistently everywhere)
  probe_options probe;
};

/// A widened layer, its next layer, the batch norm between them (if any) and the permutation.
/// `Layer`/`Next`: (conv2d, conv2d), (conv2d, dense after a flatten) or (dense, dense) weights.
template <typename Layer, typename Next>
struct widen_result {
  using scalar_type = typename Layer::scalar_type;
  Layer layer;
  Next next;
  std::optional<batch_norm_weights<scalar_type>> batch_norm;
  /// New channel `p` is old/new channel `permutation[p]` (values >= C are the new ones).
  std::vector<index_type> permutation;
  /// For each new channel position, the old channel whose values it carries (a permuted old
  /// channel or a Net2Net replica), or -1 for a channel NetMorph filled anew.
  std::vector<index_type> source;
  morph_report report;
};

namespace detail {

template <typename T>
struct always_false : std::false_type {};

/// Throws shape_error unless the next layer's weight has the rank its layout needs.
template <typename Scalar>
void check_next_rank(const tensor<Scalar>& w, index_type rank, const char* layout) {
  require<shape_error>(w.rank() == rank, "widen: next weight must be ", layout, " (rank ", rank,
                       "), got shape ", shape_string(w.shape()));
}

/// How each channel of the layer owns part of the next layer's input: `span` values per output
/// row. One specialisation per supported (layer, next) pair.
template <typename Layer, typename Next>
struct widen_layout {
  static_assert(always_false<Layer>::value,
                "widen works on (conv2d_weights, conv2d_weights), (conv2d_weights, dense_weights) "
                "after a flatten, and (dense_weights, dense_weights) of one scalar type.");
};

template <typename Scalar>
struct widen_layout<dense_weights<Scalar>, conv2d_weights<Scalar>> {
  static_assert(always_false<Scalar>::value,
                "widen: a dense layer cannot feed a convolution (netmorph has no unflatten "
                "layer); widen (dense, dense), (conv2d, conv2d) or (conv2d, dense) pairs.");
};

/// conv -> conv: each channel owns the K*K taps of every next filter.
template <typename Scalar>
struct widen_layout<conv2d_weights<Scalar>, conv2d_weights<Scalar>> {
  static index_type span(const conv2d_weights<Scalar>& layer, const conv2d_weights<Scalar>& next) {
    check_next_rank(next.weight, 4, "OIHW");
    require_ungrouped(next, "widen", "next layer");
    require<shape_error>(next.weight.dim(1) == layer.weight.dim(0), "widen: layer has ",
                         layer.weight.dim(0), " output channels, next layer expects ",
                         next.weight.dim(1));
    return next.weight.dim(2) * next.weight.dim(3);
  }
  static conv2d_weights<Scalar> rebuilt(const conv2d_weights<Scalar>& next, tensor<Scalar> w,
                                        index_type cn) {
    return {std::move(w).reshape({next.weight.dim(0), cn, next.weight.dim(2), next.weight.dim(3)}),
            next.bias, next.options};
  }
  static std::optional<tensor<Scalar>> probe(const conv2d_weights<Scalar>& layer,
                                             const conv2d_weights<Scalar>& next,
                                             const probe_options& p, std::uint64_t seed) {
    const conv2d_options o = layer.options;
    const index_type growth = std::max(next.weight.dim(2), next.weight.dim(3)) * o.stride;
    const index_type side = probe_side(p, std::max(layer.weight.dim(2), layer.weight.dim(3)),
                                       o.padding, o.stride, growth);
    return probe_input<Scalar>(p, {layer.weight.dim(1), side, side}, seed);
  }
  static tensor<Scalar> next_forward(const tensor<Scalar>& h, const conv2d_weights<Scalar>& next) {
    return conv2d(h, next);
  }
};

/// conv -> flatten -> dense: each channel owns H*W consecutive input columns (NCHW order).
template <typename Scalar>
struct widen_layout<conv2d_weights<Scalar>, dense_weights<Scalar>> {
  static index_type span(const conv2d_weights<Scalar>& layer, const dense_weights<Scalar>& next) {
    check_next_rank(next.weight, 2, "(out, in)");
    const index_type c = layer.weight.dim(0), in = next.weight.dim(1);
    require<shape_error>(c > 0 && in > 0 && in % c == 0, "widen: dense input ", in,
                         " is not a multiple of the layer's ", c,
                         " channels (each channel owns H*W columns after a flatten)");
    return in / c;
  }
  static dense_weights<Scalar> rebuilt(const dense_weights<Scalar>& next, tensor<Scalar> w,
                                       index_type) {
    return {std::move(w), next.bias};
  }
  /// An input whose convolution output has H*W = span pixels, as square as possible; nullopt
  /// when no input size gives that many (a large padding or stride can skip output sizes).
  static std::optional<tensor<Scalar>> probe(const conv2d_weights<Scalar>& layer,
                                             const dense_weights<Scalar>& next,
                                             const probe_options& p, std::uint64_t seed) {
    const index_type hw = span(layer, next);
    const conv2d_options o = layer.options;
    const index_type kh = layer.weight.dim(2), kw = layer.weight.dim(3);
    // The smallest input extent with `out` output positions along an axis of kernel `k`, or 0.
    const auto extent = [&](index_type out, index_type k) -> index_type {
      const index_type n = std::max<index_type>(1, (out - 1) * o.stride + k - 2 * o.padding);
      return n + 2 * o.padding >= k && (n + 2 * o.padding - k) / o.stride + 1 == out ? n : 0;
    };
    index_type best_h = 0, best_w = 0;
    for (index_type oh = 1; oh * oh <= hw; ++oh) {
      if (hw % oh != 0) continue;
      for (const index_type h : {oh, hw / oh}) {
        const index_type ih = extent(h, kh), iw = extent(hw / h, kw);
        if (ih > 0 && iw > 0) {
          best_h = ih;
          best_w = iw;
        }
      }
    }
    if (p.count == 0 || best_h == 0) return std::nullopt;
    return probe_input<Scalar>(p, {layer.weight.dim(1), best_h, best_w}, seed);
  }
  static tensor<Scalar> next_forward(tensor<Scalar> h, const dense_weights<Scalar>& next) {
    const index_type n = h.dim(0), features = n == 0 ? 0 : h.size() / n;
    return dense(std::move(h).reshape({n, features}), next);
  }
};

/// dense -> dense: each unit owns one input column of the next layer.
template <typename Scalar>
struct widen_layout<dense_weights<Scalar>, dense_weights<Scalar>> {
  static index_type span(const dense_weights<Scalar>& layer, const dense_weights<Scalar>& next) {
    check_next_rank(next.weight, 2, "(out, in)");
    require<shape_error>(next.weight.dim(1) == layer.weight.dim(0), "widen: layer has ",
                         layer.weight.dim(0), " outputs, next layer expects ", next.weight.dim(1));
    return 1;
  }
  static dense_weights<Scalar> rebuilt(const dense_weights<Scalar>& next, tensor<Scalar> w,
                                       index_type) {
    return {std::move(w), next.bias};
  }
  static std::optional<tensor<Scalar>> probe(const dense_weights<Scalar>& layer,
                                             const dense_weights<Scalar>&, const probe_options& p,
                                             std::uint64_t seed) {
    return probe_input<Scalar>(p, {layer.weight.dim(1)}, seed);
  }
  static tensor<Scalar> next_forward(const tensor<Scalar>& h, const dense_weights<Scalar>& next) {
    return dense(h, next);
  }
};

template <typename Scalar>
void check_widen_layer(const conv2d_weights<Scalar>& layer) {
  require<shape_error>(layer.weight.rank() == 4, "widen: weight must be OIHW (rank 4), got shape ",
                       shape_string(layer.weight.shape()));
  require_ungrouped(layer, "widen", "layer");
  check_conv2d_operands(tensor<Scalar>({1, layer.weight.dim(1), 1, 1}), layer.weight, layer.bias,
                        "widen");
}
template <typename Scalar>
void check_widen_layer(const dense_weights<Scalar>& layer) {
  require<shape_error>(layer.weight.rank() == 2,
                       "widen: dense weight must be (out, in), got shape ",
                       shape_string(layer.weight.shape()));
  const index_type c = layer.weight.dim(0);
  require<shape_error>(layer.bias.empty() || layer.bias.shape() == shape_type{c},
                       "widen: bias must have shape (", c, "), got ",
                       shape_string(layer.bias.shape()));
}

/// The layer with its grown incoming filters.
template <typename Scalar>
conv2d_weights<Scalar> rebuilt_layer(const conv2d_weights<Scalar>& l, tensor<Scalar> w,
                                     tensor<Scalar> b) {
  return {std::move(w), std::move(b), l.options};
}
template <typename Scalar>
dense_weights<Scalar> rebuilt_layer(const dense_weights<Scalar>&, tensor<Scalar> w,
                                    tensor<Scalar> b) {
  return {std::move(w), std::move(b)};
}

/// Every per-channel quantity of a width morph: the incoming filter row and bias of each channel,
/// its `span` values in each output row of the next layer, its batch-norm parameters, and the
/// old channel whose values it carries (-1 for a new one).
template <typename Scalar>
struct channel_block {
  tensor<Scalar> in_w;   ///< (C, values per incoming filter)
  tensor<Scalar> in_b;   ///< (C) or empty
  tensor<Scalar> out_w;  ///< (output rows of next, C * span)
  index_type span = 0;
  std::optional<batch_norm_weights<Scalar>> bn;
  std::vector<index_type> source;

  index_type channels() const { return in_w.dim(0); }
  index_type row() const { return in_w.dim(1); }
  index_type groups() const { return out_w.dim(0); }

  /// Zeros for `cn` channels shaped like this block (an identity batch norm).
  channel_block zeros(index_type cn) const {
    channel_block z;
    z.in_w = tensor<Scalar>({cn, row()});
    z.in_b = in_b.empty() ? tensor<Scalar>() : tensor<Scalar>({cn});
    z.out_w = tensor<Scalar>({groups(), cn * span});
    z.span = span;
    if (bn) z.bn = batch_norm_weights<Scalar>::identity(cn, bn->eps);
    z.source.assign(static_cast<std::size_t>(cn), -1);
    return z;
  }

  /// Channel `q` of this block becomes channel `s` of `from`.
  void copy_channel(index_type q, const channel_block& from, index_type s) {
    const index_type r = row(), cn = channels(), cf = from.channels();
    std::copy(from.in_w.data() + s * r, from.in_w.data() + (s + 1) * r, in_w.data() + q * r);
    if (!in_b.empty()) in_b(q) = from.in_b(s);
    for (index_type g = 0; g < groups(); ++g)
      std::copy(from.out_w.data() + (g * cf + s) * span,
                from.out_w.data() + (g * cf + s + 1) * span, out_w.data() + (g * cn + q) * span);
    if (bn) {
      bn->gamma(q) = from.bn->gamma(s);
      bn->beta(q) = from.bn->beta(s);
      bn->running_mean(q) = from.bn->running_mean(s);
      bn->running_var(q) = from.bn->running_var(s);
    }
    source[static_cast<std::size_t>(q)] = from.source[static_cast<std::size_t>(s)];
  }
};

/// The NetMorph rule: old channels kept; a new channel gets a random incoming filter and bias
/// and zero outgoing weights. Exact for any activation, and the new units train from the first
/// step: their outputs are non-zero, so their outgoing weights receive gradient at once, and the
/// incoming side follows as soon as those are non-zero. (Zeroing the incoming side instead would
/// be exact only where phi(0) = 0, and leaves units that never train where phi'(0) = 0 too, as
/// for ReLU: see docs/DESIGN.md §4.1.)
template <typename Scalar>
channel_block<Scalar> grow_netmorph(const channel_block<Scalar>& old, index_type cn, double noise,
                                    std::mt19937_64& rng) {
  const index_type c = old.channels();
  channel_block<Scalar> b = old.zeros(cn);
  for (index_type j = 0; j < c; ++j)
    b.copy_channel(j, old, j);
  std::normal_distribution<double> normal(0.0, 1.0);
  // The existing filters' spread; where they have none (all equal: a zero-initialised layer, or a
  // single weight) a fan-in scale instead, so that new units are never zero on both sides.
  const double spread = stddev(old.in_w);
  const double sd = noise * (spread > 0 && std::isfinite(spread)
                                 ? spread
                                 : 1.0 / std::sqrt(double(std::max<index_type>(1, b.row()))));
  const double sb = old.in_b.empty() ? 0.0 : noise * stddev(old.in_b);
  for (index_type j = c * b.row(); j < cn * b.row(); ++j)
    b.in_w.data()[j] = static_cast<Scalar>(sd * normal(rng));
  for (index_type ch = c; ch < cn && !b.in_b.empty(); ++ch)
    b.in_b(ch) = static_cast<Scalar>(sb * normal(rng));
  return b;
}

/// Net2Net: channel j >= C copies a random existing channel; the outgoing weights of every copy
/// (and of the original) are divided by the number of copies.
template <typename Scalar>
channel_block<Scalar> grow_net2net(const channel_block<Scalar>& old, index_type cn,
                                   std::mt19937_64& rng) {
  const index_type c = old.channels();
  channel_block<Scalar> b = old.zeros(cn);
  std::vector<index_type> count(static_cast<std::size_t>(c), 1);
  std::uniform_int_distribution<index_type> pick(0, c - 1);
  for (index_type j = 0; j < cn; ++j) {
    const index_type s = j < c ? j : pick(rng);
    if (j >= c) ++count[static_cast<std::size_t>(s)];
    b.copy_channel(j, old, s);
  }
  for (index_type g = 0; g < b.groups(); ++g)
    for (index_type j = 0; j < cn; ++j) {
      const double div = double(count[static_cast<std::size_t>(b.source[std::size_t(j)])]);
      Scalar* p = b.out_w.data() + (g * cn + j) * b.span;
      for (index_type t = 0; t < b.span; ++t)
        p[t] = static_cast<Scalar>(double(p[t]) / div);
    }
  return b;
}

/// A random permutation of `cn` channels (the identity when `permute` is false).
inline std::vector<index_type> channel_permutation(index_type cn, bool permute,
                                                   std::mt19937_64& rng) {
  std::vector<index_type> perm(static_cast<std::size_t>(cn));
  std::iota(perm.begin(), perm.end(), index_type(0));
  if (permute) std::shuffle(perm.begin(), perm.end(), rng);
  return perm;
}

/// New channel `q` is channel `perm[q]` of `b`, for every per-channel quantity.
template <typename Scalar>
channel_block<Scalar> permute_channels(const channel_block<Scalar>& b,
                                       const std::vector<index_type>& perm) {
  channel_block<Scalar> p = b.zeros(b.channels());
  for (index_type q = 0; q < b.channels(); ++q)
    p.copy_channel(q, b, perm[static_cast<std::size_t>(q)]);
  return p;
}

template <typename Scalar>
void check_widen_options(index_type c, const widen_options& opt,
                         const std::optional<batch_norm_weights<Scalar>>& bn) {
  require<shape_error>(c >= 1, "widen: the layer has no output channels");
  require<value_error>(opt.new_channels >= c, "widen: cannot shrink from ", c, " to ",
                       opt.new_channels, " channels");
  require<value_error>(opt.noise >= 0 && std::isfinite(opt.noise),
                       "widen: noise must be >= 0 and finite, got ", opt.noise);
  check_probe_options(opt.probe, "widen");
  if (bn) {
    check_batch_norm(*bn, c, "widen");
    require_finite(bn->gamma, "widen", "batch-norm gamma");
    require_finite(bn->beta, "widen", "batch-norm beta");
    require_finite(bn->running_mean, "widen", "batch-norm running mean");
    require_finite(bn->running_var, "widen", "batch-norm running var");
  }
}

template <typename Scalar>
tensor<Scalar> between_layers(tensor<Scalar> h, const std::optional<batch_norm_weights<Scalar>>& bn,
                              const activation_fn& phi) {
  if (bn) h = batch_norm_inference(std::move(h), *bn);
  return apply(phi, std::move(h));
}

}  // namespace detail

/// Width morph of a layer followed (through an optional batch norm and the activation `opt.phi`)
/// by the next layer: the layer's output channels and the next layer's input channels grow from
/// `C` to `opt.new_channels`. Pairs: (conv2d, conv2d), (conv2d, dense after a flatten: each
/// channel owns the `H*W` consecutive input columns of the dense layer), (dense, dense); any other
/// pair is a compile-time error.
/// \throws shape_error when the layers do not chain; value_error on a shrinking width, NaN/Inf
///         weights, bad options, or grown tensors beyond `max_tensor_elements`.
template <typename Layer, typename Next>
widen_result<Layer, Next> widen(
    const Layer& layer, const Next& next, const widen_options& opt,
    std::optional<batch_norm_weights<typename Layer::scalar_type>> bn = std::nullopt) {
  using Scalar = typename Layer::scalar_type;
  using layout = detail::widen_layout<Layer, Next>;
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_widen_layer(layer);
  const index_type c = layer.weight.dim(0), span = layout::span(layer, next);
  require_finite(layer.weight, "widen", "weight");
  require_finite(layer.bias, "widen", "bias");
  require_finite(next.weight, "widen", "next weight");
  detail::check_widen_options(c, opt, bn);
  const index_type cn = opt.new_channels, row = c == 0 ? 0 : layer.weight.size() / c;
  const index_type groups = next.weight.dim(0);
  shape_type layer_shape = layer.weight.shape();
  layer_shape[0] = cn;
  detail::require_allocatable("widen", "the widened layer", layer_shape, sizeof(Scalar));
  detail::require_allocatable("widen", "the widened next layer", {groups, cn, span},
                              sizeof(Scalar));

  detail::channel_block<Scalar> old{layer.weight.reshape({c, row}),
                                    layer.bias,
                                    next.weight.reshape({groups, c * span}),
                                    span,
                                    bn,
                                    {}};
  old.source.resize(static_cast<std::size_t>(c));
  std::iota(old.source.begin(), old.source.end(), index_type(0));
  std::mt19937_64 rng(opt.seed);
  detail::channel_block<Scalar> grown = opt.rule == width_rule::netmorph
                                            ? detail::grow_netmorph(old, cn, opt.noise, rng)
                                            : detail::grow_net2net(old, cn, rng);
  widen_result<Layer, Next> r;
  r.permutation = detail::channel_permutation(cn, opt.permute, rng);
  grown = detail::permute_channels(grown, r.permutation);
  layer_shape[0] = cn;
  r.layer = detail::rebuilt_layer(layer, std::move(grown.in_w).reshape(layer_shape),
                                  std::move(grown.in_b));
  r.next = layout::rebuilt(next, std::move(grown.out_w), cn);
  r.batch_norm = std::move(grown.bn);
  r.source = std::move(grown.source);

  morph_report& rep = r.report;
  rep.operation = "widen";
  rep.algorithm = to_string(opt.rule);
  rep.exact = true;  // both rules are exact by construction
  rep.width = width_details{c, cn};
  rep.new_tensors.push_back(detail::summarize("layer", r.layer.weight));
  rep.new_tensors.push_back(detail::summarize("next", r.next.weight));
  const activation_fn phi = opt.phi.value_or(activation_fn{activation_kind::identity, 0.0});
  const auto probe = layout::probe(layer, next, opt.probe, opt.seed);
  if (opt.probe.count > 0 && !probe)
    rep.notes.push_back(detail::cat("No input size gives the layer an output of ", span,
                                    " pixels (the dense layer's columns per channel): the output "
                                    "error is not measured."));
  detail::measure_probes(
      rep, probe,
      [&](const tensor<Scalar>& x) {
        return layout::next_forward(
            detail::between_layers(detail::forward_layer(x, layer), bn, phi), next);
      },
      [&](const tensor<Scalar>& x) {
        return layout::next_forward(
            detail::between_layers(detail::forward_layer(x, r.layer), r.batch_norm, phi), r.next);
      });
  if (!opt.phi)
    rep.notes.push_back(
        "The activation between the layers is not given: the probes pass through the identity.");
  rep.seconds = detail::seconds_since(t0);
  return r;
}

}  // namespace netmorph

#endif  // NETMORPH_MORPH_WIDTH_HPP

#ifndef NETMORPH_MORPH_SUBNET_HPP
#define NETMORPH_MORPH_SUBNET_HPP

/// \file subnet.hpp
/// Subnet morphing (paper §3.5, docs/DESIGN.md §4.3): a layer becomes a sequential subnet of `P+1`
/// layers (eq. 19), or `n` parallel paths whose outputs are summed, each a sequential subnet.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/morph/depth.hpp>
#include <netmorph/morph/report.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/tensor.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace netmorph {

/// Options of `to_subnet`: the widths `C_1..C_P` of the new blobs and the kernels
/// `K_1..K_{P+1}` of the layers, with \f$ \tilde K = \sum_j (K_j - 1) + 1 \ge K \f$, and the
/// options of every depth step.
struct subnet_options {
  std::vector<index_type> widths;   ///< C_1..C_P
  std::vector<index_type> kernels;  ///< K_1..K_{P+1}
  /// Options of every depth step (algorithm, seed, tolerance, phi, probe, ...). `widths` and
  /// `kernels` set the sizes: step.mid_channels, k1 and k2 must stay 0, insert_batch_norm false
  /// and padding exact (the subnet places its own paddings).
  deepen_options step;
};

/// A sequential chain of convolutions with a P-activation between consecutive layers.
template <typename Scalar>
struct conv2d_chain {
  std::vector<conv2d_weights<Scalar>> layers;
  std::vector<p_activation_fn> between;  ///< layers.size() - 1 entries, at a = 1 at creation
};

/// The sequential subnet and the report.
template <typename Scalar>
struct subnet_result {
  conv2d_chain<Scalar> chain;
  morph_report report;
};

/// How a stacked subnet splits G (and its bias) over the paths.
enum class split_kind {
  equal,          ///< G_i = G / n
  random_convex,  ///< G_i = l_i G with random l_i > 0, sum l_i = 1
  given           ///< G_i = l_i G with the caller's `weights` (must sum to 1)
};

/// "equal", "random_convex" or "given".
inline const char* to_string(split_kind s) {
  static const char* const names[] = {"equal", "random_convex", "given"};
  return names[static_cast<int>(s)];
}

/// Options of `to_stacked_subnet`: one `subnet_options` per path.
struct stacked_subnet_options {
  std::vector<subnet_options> paths;
  split_kind split = split_kind::equal;
  std::vector<double> weights;  ///< for split_kind::given
  /// Seeds the split and the probes; path i is solved with a seed mixed from (seed, i, its own
  /// step.seed), so paths differ even when their options are equal.
  std::uint64_t seed = 0;
  probe_options probe;
};

/// The paths of a stacked subnet (the output is the sum of the paths' outputs), the split used,
/// and the report.
template <typename Scalar>
struct stacked_subnet_result {
  std::vector<conv2d_chain<Scalar>> paths;
  std::vector<double> split;
  morph_report report;
};

/// Forward pass of a sequential subnet: each layer, then the P-activation after it (none after
/// the last).
/// \throws value_error when `between` does not have `layers.size() - 1` entries.
template <typename Scalar>
tensor<Scalar> forward_chain(const tensor<Scalar>& x, const conv2d_chain<Scalar>& chain) {
  const std::size_t n = chain.layers.size();
  detail::require<value_error>(n >= 1 && chain.between.size() + 1 == n, "forward_chain: ", n,
                               " layers need ", n == 0 ? 0 : n - 1, " between activations, got ",
                               chain.between.size());
  tensor<Scalar> h = conv2d(x, chain.layers[0]);
  for (std::size_t j = 1; j < n; ++j)
    h = conv2d(apply(chain.between[j - 1], std::move(h)), chain.layers[j]);
  return h;
}

/// Forward pass of a stacked subnet: the sum of its paths.
/// \throws value_error on no paths; shape_error when the paths' outputs differ in shape.
template <typename Scalar>
tensor<Scalar> forward_stacked(const tensor<Scalar>& x,
                               const std::vector<conv2d_chain<Scalar>>& paths) {
  detail::require<value_error>(!paths.empty(), "forward_stacked: no paths");
  tensor<Scalar> sum = forward_chain(x, paths[0]);
  for (std::size_t i = 1; i < paths.size(); ++i) {
    const tensor<Scalar> y = forward_chain(x, paths[i]);
    detail::require<shape_error>(y.shape() == sum.shape(), "forward_stacked: path ", i,
                                 " gives shape ", detail::shape_string(y.shape()),
                                 ", path 0 gives ", detail::shape_string(sum.shape()));
    sum.vector() += y.vector();
  }
  return sum;
}

namespace detail {

template <typename Scalar>
void check_parent(const conv2d_weights<Scalar>& parent, const char* who) {
  require<shape_error>(parent.weight.rank() == 4, who, ": weight must be OIHW (rank 4), got shape ",
                       shape_string(parent.weight.shape()));
  require<shape_error>(parent.weight.dim(2) == parent.weight.dim(3), who,
                       ": kernel must be square, got ", parent.weight.dim(2), "x",
                       parent.weight.dim(3));
  require<shape_error>(
      parent.bias.empty() || parent.bias.shape() == shape_type{parent.weight.dim(0)}, who,
      ": bias must have shape (", parent.weight.dim(0), "), got ",
      shape_string(parent.bias.shape()));
  require_finite(parent.weight, who, "weight");
  require_finite(parent.bias, who, "bias");
  require_ungrouped(parent, who, "parent");
}

/// Checks the subnet options against the parent `(C2, C0, K, K)` and returns `K~`.
inline index_type check_subnet_options(index_type c2, index_type c0, index_type k,
                                       const subnet_options& opt, const char* who) {
  const deepen_options& st = opt.step;
  require<value_error>(st.mid_channels == 0, who,
                       ": step.mid_channels must stay 0 (widths set "
                       "it), got ",
                       st.mid_channels);
  require<value_error>(st.k1 == 0, who, ": step.k1 must stay 0 (kernels set it), got ", st.k1);
  require<value_error>(st.k2 == 0, who, ": step.k2 must stay 0 (kernels set it), got ", st.k2);
  require<value_error>(!st.insert_batch_norm, who,
                       ": step.insert_batch_norm must be false (a subnet inserts no batch norm)");
  require<value_error>(st.padding == depth_padding::exact, who,
                       ": step.padding must be exact (the subnet places its own paddings)");
  check_deepen_options(st);
  const std::size_t p = opt.widths.size();
  require<value_error>(p >= 1 && opt.kernels.size() == p + 1, who,
                       ": a subnet of P + 1 layers needs P >= 1 widths and P + 1 kernels, got ", p,
                       " widths and ", opt.kernels.size(), " kernels");
  index_type kt = 1;
  for (std::size_t j = 0; j <= p; ++j) {
    require<value_error>(opt.kernels[j] >= 1, who, ": kernel ", j + 1, " must be >= 1, got ",
                         opt.kernels[j]);
    kt += opt.kernels[j] - 1;
  }
  for (std::size_t j = 0; j < p; ++j)
    require<value_error>(opt.widths[j] >= 1, who, ": width ", j + 1, " must be >= 1, got ",
                         opt.widths[j]);
  for (std::size_t j = 0; j <= p; ++j)
    require_allocatable(who, cat("layer ", j),
                        {j == p ? c2 : opt.widths[j], j == 0 ? c0 : opt.widths[j - 1],
                         opt.kernels[j], opt.kernels[j]},
                        sizeof(double));
  require<value_error>(kt >= k, who, ": the kernels reach K~ = ", kt,
                       ", smaller than the parent's kernel K = ", k);
  require<value_error>((kt - k) % 2 == 0, who, ": the kernels reach K~ = ", kt,
                       ", which grows the parent's kernel K = ", k, " by ", kt - k,
                       "; a centred zero-padding needs an even growth");
  return kt;
}

/// A sequential subnet in double: its layers (final strides and paddings), the composition
/// `F_{P+1} (*) ... (*) F_1`, and the report of each depth step.
struct double_chain {
  std::vector<conv2d_weights<double>> layers;
  tensor<double> composed;
  std::vector<morph_report> steps;
};

/// Eq. 19 by repeated depth morphing: `G` splits into `F_1` and a remainder `H_1` of kernel
/// `K~ - K_1 + 1`, `H_1` into `F_2` and `H_2`, ..., each step a `deepen` on a stride-1 unpadded
/// layer. Then the first layer gets the parent's padding plus `(K~ - K)/2`, the last the stride.
template <typename Real>
double_chain repeated_depth(const conv2d_weights<Real>& parent, const subnet_options& opt,
                            index_type kt, std::uint64_t seed) {
  const index_type k = parent.weight.dim(2);
  const std::size_t p = opt.widths.size();
  conv2d_weights<double> rest{parent.weight, parent.bias, conv2d_options{1, 0}};
  double_chain out;
  index_type remaining = kt;
  for (std::size_t j = 0; j < p; ++j) {
    deepen_options d = opt.step;
    d.mid_channels = opt.widths[j];
    d.k1 = opt.kernels[j];
    d.k2 = remaining - d.k1 + 1;
    require<value_error>(d.k2 >= 1, "to_subnet: kernel ", j + 1, " = ", d.k1,
                         " exceeds what is left of K~ (", remaining, ")");
    d.seed = mix_seed(seed, j);
    d.require_exact = false;
    d.probe.count = 0;
    deepen_result<conv2d_weights<double>> r = deepen(rest, d);
    out.steps.push_back(std::move(r.report));
    out.layers.push_back(std::move(r.first));
    rest = conv2d_weights<double>{std::move(r.second.weight), std::move(r.second.bias),
                                  conv2d_options{1, 0}};
    remaining = d.k2;
  }
  out.layers.push_back(std::move(rest));
  out.composed = out.layers[0].weight;
  for (std::size_t j = 1; j < out.layers.size(); ++j)
    out.composed = compose(out.layers[j].weight, out.composed);
  for (std::size_t j = 0; j < out.layers.size(); ++j)
    out.layers[j].options = conv2d_options{j + 1 == out.layers.size() ? parent.options.stride : 1,
                                           j == 0 ? parent.options.padding + (kt - k) / 2 : 0};
  return out;
}

/// \f$ \|\sum_i C_i - \tilde G\| / \|\tilde G\| \f$ with every term zero-padded to `kt`.
template <typename Real>
double padded_residual(const std::vector<const tensor<Real>*>& terms, const tensor<Real>& g,
                       index_type kt) {
  const tensor<double> gt = pad_kernel(g, kt, kt);
  tensor<double> sum(gt.shape());
  for (const tensor<double>* t : terms)
    sum.vector() += pad_kernel(*t, kt, kt).vector();
  const double den = gt.vector().norm(), num = (sum.vector() - gt.vector()).norm();
  return den > 0 ? num / den : num;
}

/// The storage-scalar chain: the layers cast, a P-activation at a = 1 of `phi` between them.
template <typename Scalar>
conv2d_chain<Scalar> cast_chain(const double_chain& d, const deepen_options& step) {
  conv2d_chain<Scalar> c;
  for (const conv2d_weights<double>& l : d.layers)
    c.layers.push_back(conv2d_weights<Scalar>{l.weight.template cast<Scalar>(),
                                              cast_tensor<Scalar>(l.bias), l.options});
  c.between.assign(d.layers.size() - 1, make_p_activation(step.phi.value_or(activation_fn{}), 1.0));
  return c;
}

/// The report of one sequential subnet, without probes and time.
template <typename Scalar>
morph_report chain_report(const double_chain& d, const conv2d_chain<Scalar>& chain, double residual,
                          const subnet_options& opt, index_type kt, const std::string& prefix) {
  morph_report rep;
  rep.operation = "to_subnet";
  rep.algorithm = "repeated_depth";
  rep.relative_residual = residual;
  rep.exact = residual <= opt.step.tolerance;
  rep.subnet = subnet_details{kt, {}};
  for (std::size_t j = 0; j < chain.layers.size(); ++j)
    rep.new_tensors.push_back(summarize(cat(prefix, "layer ", j), chain.layers[j].weight));
  rep.steps = d.steps;
  if (!rep.exact)
    rep.notes.push_back(cat("Eq. 19 misses the tolerance ", opt.step.tolerance,
                            ": relative residual ", residual, "; the subnet is approximate."));
  return rep;
}

inline void require_chain_exact(double residual, const deepen_options& step,
                                const std::string& who) {
  if (step.require_exact && !(residual <= step.tolerance))
    throw numerical_error(cat(who, ": relative residual ", residual,
                              " of eq. 19 exceeds the tolerance ", step.tolerance,
                              "; widen the subnet or set step.require_exact = false"));
}

template <typename Scalar>
conv2d_weights<double> scaled_double(const conv2d_weights<Scalar>& w, double l) {
  conv2d_weights<double> d{w.weight.template cast<double>(),
                           w.bias.empty() ? tensor<double>() : w.bias.template cast<double>(),
                           w.options};
  d.weight.vector() *= l;
  if (!d.bias.empty()) d.bias.vector() *= l;
  return d;
}

}  // namespace detail

/// Sequential subnet morph (eq. 19) by repeated depth morphing (see `detail::repeated_depth`);
/// exact at every border pixel, the P-activations between the layers at a = 1.
/// \throws value_error when the widths or kernels cannot reach `K~` (sizes, `K~ < K`, odd
///         growth), on step fields that widths/kernels set, NaN/Inf weights, or layers beyond
///         `max_tensor_elements`; numerical_error when `step.require_exact` and the chain misses
///         its tolerance.
template <typename Scalar>
subnet_result<Scalar> to_subnet(const conv2d_weights<Scalar>& parent, const subnet_options& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_parent(parent, "to_subnet");
  const index_type kt = detail::check_subnet_options(parent.weight.dim(0), parent.weight.dim(1),
                                                     parent.weight.dim(2), opt, "to_subnet");
  const conv2d_weights<double> pd = detail::scaled_double(parent, 1.0);
  const detail::double_chain d = detail::repeated_depth(pd, opt, kt, opt.step.seed);
  const double residual = detail::padded_residual({&d.composed}, pd.weight, kt);
  detail::require_chain_exact(residual, opt.step, "to_subnet");
  subnet_result<Scalar> out;
  out.chain = detail::cast_chain<Scalar>(d, opt.step);
  out.report = detail::chain_report(d, out.chain, residual, opt, kt, "");
  detail::probe_conv_child(out.report, parent, opt.step.probe, kt - parent.weight.dim(2),
                           opt.step.seed,
                           [&](const tensor<Scalar>& x) { return forward_chain(x, out.chain); });
  out.report.seconds = detail::seconds_since(t0);
  return out;
}

/// n-way stacked subnet morph: \f$ G = \sum_i l_i G \f$ (and the bias likewise), path `i` the
/// sequential subnet of `l_i G`; the paths' outputs are summed (`forward_stacked`).
/// \throws value_error on no paths, weights that do not sum to 1 (or are not finite), a weight
///         count that differs from the path count, and everything `to_subnet` throws.
template <typename Scalar>
stacked_subnet_result<Scalar> to_stacked_subnet(const conv2d_weights<Scalar>& parent,
                                                const stacked_subnet_options& opt) {
  using detail::require;
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_parent(parent, "to_stacked_subnet");
  detail::check_probe_options(opt.probe, "to_stacked_subnet");
  const std::size_t n = opt.paths.size();
  require<value_error>(n >= 1, "to_stacked_subnet: needs at least one path, got 0");
  std::vector<index_type> kts;
  for (const subnet_options& po : opt.paths)
    kts.push_back(detail::check_subnet_options(parent.weight.dim(0), parent.weight.dim(1),
                                               parent.weight.dim(2), po, "to_stacked_subnet"));
  std::vector<double> l(n, 1.0 / double(n));
  std::mt19937_64 rng(opt.seed);
  if (opt.split == split_kind::random_convex) {
    std::uniform_real_distribution<double> u(0.2, 1.0);
    double s = 0;
    for (double& v : l)
      s += (v = u(rng));
    for (double& v : l)
      v /= s;
  } else if (opt.split == split_kind::given) {
    require<value_error>(opt.weights.size() == n, "to_stacked_subnet: ", opt.weights.size(),
                         " split weights for ", n, " paths");
    double s = 0;
    for (double v : opt.weights) {
      require<value_error>(std::isfinite(v), "to_stacked_subnet: split weight ", v,
                           " is not finite");
      s += v;
    }
    require<value_error>(std::abs(s - 1.0) <= 1e-12, "to_stacked_subnet: split weights sum to ", s,
                         ", so the paths would not sum to G");
    l = opt.weights;
  }
  stacked_subnet_result<Scalar> out;
  out.split = l;
  morph_report& rep = out.report;
  rep.operation = "to_stacked_subnet";
  rep.algorithm = std::string("split_") + to_string(opt.split);
  rep.exact = true;
  index_type kmax = parent.weight.dim(2);
  std::vector<detail::double_chain> chains;
  for (std::size_t i = 0; i < n; ++i) {
    const subnet_options& po = opt.paths[i];
    const conv2d_weights<double> part = detail::scaled_double(parent, l[i]);
    chains.push_back(detail::repeated_depth(
        part, po, kts[i], detail::mix_seed(detail::mix_seed(opt.seed, i), po.step.seed)));
    const double residual = detail::padded_residual({&chains.back().composed}, part.weight, kts[i]);
    detail::require_chain_exact(residual, po.step, detail::cat("to_stacked_subnet: path ", i));
    out.paths.push_back(detail::cast_chain<Scalar>(chains.back(), po.step));
    rep.steps.push_back(detail::chain_report(chains.back(), out.paths.back(), residual, po, kts[i],
                                             detail::cat("path ", i, " ")));
    rep.exact = rep.exact && rep.steps.back().exact;
    for (const tensor_summary& t : rep.steps.back().new_tensors)
      rep.new_tensors.push_back(t);
    kmax = std::max(kmax, kts[i]);
  }
  std::vector<const tensor<double>*> terms;
  for (const detail::double_chain& c : chains)
    terms.push_back(&c.composed);
  rep.relative_residual =
      detail::padded_residual(terms, parent.weight.template cast<double>(), kmax);
  rep.subnet = subnet_details{kmax, l};
  detail::probe_conv_child(rep, parent, opt.probe, kmax - parent.weight.dim(2), opt.seed,
                           [&](const tensor<Scalar>& x) { return forward_stacked(x, out.paths); });
  rep.seconds = detail::seconds_since(t0);
  return out;
}

}  // namespace netmorph

#endif  // NETMORPH_MORPH_SUBNET_HPP

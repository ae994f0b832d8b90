#ifndef NETMORPH_MORPH_SUBNET_HPP
#define NETMORPH_MORPH_SUBNET_HPP

/// \file subnet.hpp
/// Subnet morphing (paper §3.5, DESIGN §4): one layer becomes a sequential subnet of `P+1`
/// layers (eq. 19), or `n` parallel paths whose outputs are summed, each a sequential subnet.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/morph/depth.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/tensor.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace netmorph {

/// Options of `to_subnet`: the widths `C_1..C_P` of the new blobs and the kernels
/// `K_1..K_{P+1}` of the layers, with \f$ \tilde K = \sum_j (K_j - 1) + 1 \ge K \f$.
struct subnet_options {
  std::vector<index_type> widths;
  std::vector<index_type> kernels;
  depth_algorithm algorithm = depth_algorithm::practical;  ///< of every depth step
  std::uint64_t seed = 0;
  double tolerance = 1e-10;  ///< relative residual of the whole chain
  int max_iter = 100;
  double noise = 1.0;
  bool random_bias = true;
  bool require_exact = true;  ///< throw numerical_error when the chain misses the tolerance
  index_type probe_count = 4;
  index_type probe_size = 0;
};

/// What a subnet morph did.
struct subnet_report {
  index_type k_tilde = 0;
  std::vector<deepen_report> steps;  ///< one depth morph per new blob
  double relative_residual = 0;      ///< ||G~ - F_{P+1} (*) ... (*) F_1|| / ||G~||
  double max_output_error = 0, relative_output_error = 0;  ///< on the probes
  bool exact = false;
  std::vector<double> nonzero, stds;  ///< per layer
  double seconds = 0;
};

/// The layers of a sequential subnet (apply in order, the identity between them at creation).
template <typename Scalar>
struct subnet_result {
  std::vector<conv2d_weights<Scalar>> layers;
  subnet_report report;
};

/// How a stacked subnet splits G (and its bias) over the paths.
enum class split_kind {
  equal,          ///< G_i = G / n
  random_convex,  ///< G_i = l_i G with random l_i > 0, sum l_i = 1
  given           ///< G_i = l_i G with the caller's `weights` (must sum to 1)
};

/// Options of `to_stacked_subnet`: one `subnet_options` per path.
struct stacked_subnet_options {
  std::vector<subnet_options> paths;
  split_kind split = split_kind::equal;
  std::vector<double> weights;  ///< for split_kind::given
  std::uint64_t seed = 0;
  index_type probe_count = 4;
  index_type probe_size = 0;
};

/// What a stacked subnet morph did.
struct stacked_subnet_report {
  std::vector<double> weights;  ///< the split actually used
  std::vector<subnet_report> paths;
  double max_output_error = 0, relative_output_error = 0;  ///< of the summed paths
  bool exact = false;
  double seconds = 0;
};

/// The paths of a stacked subnet; the output is the sum of the paths' outputs.
template <typename Scalar>
struct stacked_subnet_result {
  std::vector<std::vector<conv2d_weights<Scalar>>> paths;
  stacked_subnet_report report;
};

/// Forward pass of a sequential subnet (no activation between the layers: at creation the
/// P-activations there are the identity).
template <typename Scalar>
tensor<Scalar> forward_chain(const tensor<Scalar>& x,
                             const std::vector<conv2d_weights<Scalar>>& layers) {
  tensor<Scalar> h = x;
  for (const auto& l : layers)
    h = conv2d(h, l);
  return h;
}

/// Forward pass of a stacked subnet: the sum of its paths.
/// \throws shape_error when the paths' outputs differ in shape.
template <typename Scalar>
tensor<Scalar> forward_stacked(const tensor<Scalar>& x,
                               const std::vector<std::vector<conv2d_weights<Scalar>>>& paths) {
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
}

template <typename Scalar>
index_type probe_side(const conv2d_weights<Scalar>& parent, index_type k_tilde,
                      index_type requested) {
  if (requested > 0) return requested;
  const index_type k = parent.weight.dim(2), pad = parent.options.padding;
  return std::max<index_type>(1, k - 2 * pad) + 2 * (k_tilde - k) + 2 * parent.options.stride + 3;
}

}  // namespace detail

/// Sequential subnet morph (eq. 19) by repeated depth morphing: `G` is split into
/// `F_1` and a remainder `H_1` of kernel `K~ - K_1 + 1`, `H_1` into `F_2` and `H_2`, ..., each
/// step a `deepen` (Algorithm 2 by default). The first layer gets the parent's padding plus
/// `(K~ - K)/2`, the others none, the last one the stride: exact at every border pixel.
/// \throws value_error when the widths or kernels cannot reach `K~` (sizes, `K~ < K`, odd
///         growth), on NaN/Inf weights; numerical_error when `require_exact` and the chain misses
///         its tolerance.
template <typename Scalar>
subnet_result<Scalar> to_subnet(const conv2d_weights<Scalar>& parent, const subnet_options& opt) {
  using detail::require;
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_parent(parent, "to_subnet");
  const index_type k = parent.weight.dim(2);
  const index_type n_new = static_cast<index_type>(opt.widths.size());
  require<value_error>(
      n_new >= 1 && opt.kernels.size() == opt.widths.size() + 1,
      "to_subnet: a subnet of P + 1 layers needs P >= 1 widths and P + 1 kernels, got ",
      opt.widths.size(), " widths and ", opt.kernels.size(), " kernels");
  index_type kt = 1;
  for (std::size_t j = 0; j < opt.kernels.size(); ++j) {
    require<value_error>(opt.kernels[j] >= 1, "to_subnet: kernel ", j + 1, " must be >= 1, got ",
                         opt.kernels[j]);
    kt += opt.kernels[j] - 1;
  }
  for (std::size_t j = 0; j < opt.widths.size(); ++j)
    require<value_error>(opt.widths[j] >= 1, "to_subnet: width ", j + 1, " must be >= 1, got ",
                         opt.widths[j]);
  require<value_error>(kt >= k, "to_subnet: the kernels reach K~ = ", kt,
                       ", smaller than the parent's kernel K = ", k);
  require<value_error>((kt - k) % 2 == 0, "to_subnet: the kernels reach K~ = ", kt,
                       ", which grows the parent's kernel K = ", k, " by ", kt - k,
                       "; a centred zero-padding needs an even growth");

  subnet_result<Scalar> out;
  out.report.k_tilde = kt;
  // Peel one layer at a time, in double, with plain stride-1 unpadded layers.
  conv2d_weights<double> rest{
      parent.weight.template cast<double>(),
      parent.bias.empty() ? tensor<double>() : parent.bias.template cast<double>(),
      conv2d_options{1, 0}};
  std::vector<tensor<double>> ws, bs;
  index_type remaining = kt;
  for (index_type j = 0; j < n_new; ++j) {
    deepen_options d;
    d.mid_channels = opt.widths[static_cast<std::size_t>(j)];
    d.k1 = opt.kernels[static_cast<std::size_t>(j)];
    d.k2 = remaining - d.k1 + 1;
    require<value_error>(d.k2 >= 1, "to_subnet: kernel ", j + 1, " = ", d.k1,
                         " exceeds what is left of K~ (", remaining, ")");
    d.algorithm = opt.algorithm;
    d.seed = opt.seed + static_cast<std::uint64_t>(j) * 0x9E3779B97F4A7C15ull;
    d.tolerance = opt.tolerance;
    d.max_iter = opt.max_iter;
    d.noise = opt.noise;
    d.random_bias = opt.random_bias;
    d.require_exact = false;
    d.probe_count = 0;
    deepen_result<double> r = deepen(rest, d);
    out.report.steps.push_back(r.report);
    ws.push_back(std::move(r.first.weight));
    bs.push_back(std::move(r.first.bias));
    rest = conv2d_weights<double>{std::move(r.second.weight), std::move(r.second.bias),
                                  conv2d_options{1, 0}};
    remaining = d.k2;
  }
  ws.push_back(std::move(rest.weight));
  bs.push_back(std::move(rest.bias));

  // Residual of the whole chain against G~.
  tensor<double> comp = ws[0];
  for (std::size_t j = 1; j < ws.size(); ++j)
    comp = compose(ws[j], comp);
  const tensor<double> gt = pad_kernel(parent.weight.template cast<double>(), kt, kt);
  const double den = gt.vector().norm();
  const double num = (comp.vector() - gt.vector()).norm();
  out.report.relative_residual = den > 0 ? num / den : num;
  if (opt.require_exact && !(out.report.relative_residual <= opt.tolerance)) {
    throw numerical_error(detail::cat("to_subnet: relative residual ", out.report.relative_residual,
                                      " of eq. 19 exceeds the tolerance ", opt.tolerance,
                                      "; widen the subnet or set require_exact = false"));
  }
  const index_type last = static_cast<index_type>(ws.size()) - 1;
  for (index_type j = 0; j <= last; ++j) {
    const std::size_t u = static_cast<std::size_t>(j);
    conv2d_options p{j == last ? parent.options.stride : 1,
                     j == 0 ? parent.options.padding + (kt - k) / 2 : 0};
    out.layers.push_back(conv2d_weights<Scalar>{
        ws[u].template cast<Scalar>(),
        bs[u].empty() ? tensor<Scalar>() : bs[u].template cast<Scalar>(), p});
    out.report.nonzero.push_back(nonzero_fraction(out.layers.back().weight));
    out.report.stds.push_back(stddev(out.layers.back().weight));
  }
  out.report.exact = out.report.relative_residual <= opt.tolerance;
  if (opt.probe_count > 0) {
    std::mt19937_64 rng(opt.seed ^ 0x2545F4914F6CDD1Dull);
    const index_type hw = detail::probe_side(parent, kt, opt.probe_size);
    auto x = tensor<Scalar>::random_normal({opt.probe_count, parent.weight.dim(1), hw, hw}, rng);
    auto y = conv2d(x, parent), z = forward_chain(x, out.layers);
    out.report.max_output_error = max_abs_error(z, y);
    out.report.relative_output_error = relative_error(z, y);
  }
  out.report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

/// n-way stacked subnet morph: \f$ G = \sum_i l_i G \f$ (and the bias likewise), path `i` the
/// sequential subnet of `l_i G`; the paths' outputs are summed.
/// \throws value_error on no paths, weights that do not sum to 1 (or are not finite), a weight
///         count that differs from the path count, and everything `to_subnet` throws.
template <typename Scalar>
stacked_subnet_result<Scalar> to_stacked_subnet(const conv2d_weights<Scalar>& parent,
                                                const stacked_subnet_options& opt) {
  using detail::require;
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_parent(parent, "to_stacked_subnet");
  const std::size_t n = opt.paths.size();
  require<value_error>(n >= 1, "to_stacked_subnet: needs at least one path, got 0");
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
  out.report.weights = l;
  index_type kmax = parent.weight.dim(2);
  for (std::size_t i = 0; i < n; ++i) {
    conv2d_weights<Scalar> part = parent;
    for (Scalar& v : part.weight)
      v = static_cast<Scalar>(double(v) * l[i]);
    for (Scalar& v : part.bias)
      v = static_cast<Scalar>(double(v) * l[i]);
    subnet_options po = opt.paths[i];
    po.probe_count = 0;
    subnet_result<Scalar> r = to_subnet(part, po);
    kmax = std::max(kmax, r.report.k_tilde);
    out.paths.push_back(std::move(r.layers));
    out.report.paths.push_back(std::move(r.report));
  }
  out.report.exact = true;
  for (const auto& p : out.report.paths)
    out.report.exact = out.report.exact && p.exact;
  if (opt.probe_count > 0) {
    const index_type hw = detail::probe_side(parent, kmax, opt.probe_size);
    auto x = tensor<Scalar>::random_normal({opt.probe_count, parent.weight.dim(1), hw, hw}, rng);
    auto y = conv2d(x, parent);
    auto z = forward_stacked(x, out.paths);
    out.report.max_output_error = max_abs_error(z, y);
    out.report.relative_output_error = relative_error(z, y);
  }
  out.report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace netmorph

#endif  // NETMORPH_MORPH_SUBNET_HPP

#ifndef NETMORPH_MORPH_DEPTH_HPP
#define NETMORPH_MORPH_DEPTH_HPP

/// \file depth.hpp
/// Depth morphing (paper §3.1-3.2, docs/DESIGN.md §3): a convolution or dense layer `G` becomes two
/// layers `F1`, `F2` whose composition equals `G` exactly, borders and biases included.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/morph/report.hpp>
#include <netmorph/ops/batch_norm.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/ops/dense.hpp>
#include <netmorph/solve/factor_ls.hpp>
#include <netmorph/tensor.hpp>

#include <Eigen/QR>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace netmorph {

/// Which depth-morphing algorithm to run.
enum class depth_algorithm {
  practical,  ///< Algorithm 2: shrink the non-expanding kernel until one step is exact, pad back
  general,    ///< Algorithm 1: alternate the two least-squares half-steps at the requested sizes
  idmorph     ///< Net2Net's deeper op: F1 = G, F2 = identity (the baseline)
};

/// How the two child layers are padded.
enum class depth_padding {
  exact,  ///< first layer: parent's padding + (K~-K)/2, second: 0. Exact at every border pixel.
  same    ///< first: parent's padding + (K1-K)/2, second: (K2-1)/2. Approximate at the border.
};

/// Which child layer carries a strided parent's stride.
enum class stride_placement {
  automatic,  ///< the second layer, or the first when K2 = 1 (both exact)
  first,      ///< the first layer; exact only when K2 = 1
  second      ///< the second layer
};

/// The name `morph_report::algorithm` uses: "practical", "general" or "idmorph".
inline const char* to_string(depth_algorithm a) {
  switch (a) {
    case depth_algorithm::practical:
      return "practical";
    case depth_algorithm::general:
      return "general";
    default:
      return "idmorph";
  }
}

/// Options of `deepen`; the defaults give an exact morph `C1 = C2`, `K1 = K`, `K2 = 1`.
struct deepen_options {
  index_type mid_channels = 0;  ///< C1, channels of the new intermediate blob; 0: the parent's C2
  index_type k1 = 0;            ///< kernel of the first child layer; 0: the parent's K
  index_type k2 = 0;            ///< kernel of the second child layer; 0: 1
  depth_algorithm algorithm = depth_algorithm::practical;
  depth_padding padding = depth_padding::exact;
  stride_placement stride = stride_placement::automatic;
  /// `result.between` is P-phi at a = 1. Unset: relu (PReLU) at weight level.
  std::optional<activation_fn> phi;
  /// `result.batch_norm`: gamma sqrt(1 + eps), beta 0, mean 0, var 1 (the identity in inference
  /// mode) after the first layer.
  bool insert_batch_norm = false;
  std::uint64_t seed = 0;     ///< seeds the random initialisation, null-space noise and probes
  double tolerance = 1e-10;   ///< target relative residual of eq. 6, solved in double
  int max_iter = 100;         ///< Algorithm 1 iterations (pairs of half-steps) at most
  double noise = 1.0;         ///< null-space component, relative to the minimum-norm solution
  bool random_bias = true;    ///< random b1 of the RMS size of g (else 0); b2 = g - F2 (*) b1
  bool rescale = true;        ///< equalise the std of F1 and F2 (F1 *= a, b1 *= a, F2 /= a)
  bool require_exact = true;  ///< throw numerical_error when eq. 6 misses the tolerance
  probe_options probe;
};

/// The two child layers of a depth morph (`Weights` is `conv2d_weights<S>` or `dense_weights<S>`),
/// what sits between them, and the report.
template <typename Weights>
struct deepen_result {
  using scalar_type = typename Weights::scalar_type;
  Weights first, second;
  std::optional<batch_norm_weights<scalar_type>> batch_norm;  ///< after `first`, when asked
  p_activation_fn between;  ///< between the layers (after the batch norm), at a = 1
  morph_report report;
};

/// Inference-mode forward pass of a depth morph's child: first, batch norm, between, second.
/// \throws shape_error when `x` does not fit the first layer.
template <typename Weights>
tensor<typename Weights::scalar_type> forward(const tensor<typename Weights::scalar_type>& x,
                                              const deepen_result<Weights>& r) {
  tensor<typename Weights::scalar_type> h = detail::forward_layer(x, r.first);
  if (r.batch_norm) h = batch_norm_inference(std::move(h), *r.batch_norm);
  return detail::forward_layer(apply(r.between, std::move(h)), r.second);
}

namespace detail {

/// Parameter counts of eq. 6 at kernels `(K1, K2)`: of F1, of F2 and of `G~`, in double (no
/// overflow). Each half-step is underdetermined, so it can be exact at once, when its factor has
/// at least as many parameters as `G~`.
struct depth_counts {
  double f1 = 0, f2 = 0, target = 0;
  bool f1_step_exact() const { return f1 >= target; }
  bool f2_step_exact() const { return f2 >= target; }
  /// Paper condition (7): both half-steps underdetermined.
  bool condition7() const { return f1_step_exact() && f2_step_exact(); }
  /// At least one half-step underdetermined.
  bool one_step() const { return f1_step_exact() || f2_step_exact(); }
};

/// The sizes of a depth morph, resolved from the parent and the options.
struct depth_sizes {
  index_type c0 = 0, c1 = 0, c2 = 0, k = 0, k1 = 0, k2 = 0, kt = 0;
  index_type stride = 1, pad = 0;
  bool stride_first = false;  ///< the first child layer carries the stride

  depth_counts counts(index_type ka, index_type kb) const {
    const double t = double(ka + kb - 1);
    return depth_counts{double(c1) * double(c0) * double(ka) * double(ka),
                        double(c2) * double(c1) * double(kb) * double(kb),
                        double(c2) * double(c0) * t * t};
  }
  /// The smallest C1 for which one half-step at the requested kernels is underdetermined.
  index_type dense_mid_channels() const {
    const index_type t2 = kt * kt;
    const index_type by_f1 = (c2 * t2 + k1 * k1 - 1) / (k1 * k1);
    const index_type by_f2 = (c0 * t2 + k2 * k2 - 1) / (k2 * k2);
    return std::min(by_f1, by_f2);
  }
};

template <typename Scalar>
void check_deepen_parent(const conv2d_weights<Scalar>& parent) {
  const tensor<Scalar>& g = parent.weight;
  const tensor<Scalar>& gb = parent.bias;
  require<shape_error>(g.rank() == 4, "deepen: weight must be OIHW (rank 4), got shape ",
                       shape_string(g.shape()));
  require<shape_error>(g.dim(2) == g.dim(3) && g.dim(2) >= 1,
                       "deepen: kernel must be square and non-empty, got ", g.dim(2), "x",
                       g.dim(3));
  require<shape_error>(g.dim(0) >= 1 && g.dim(1) >= 1, "deepen: weight has no channels, shape ",
                       shape_string(g.shape()));
  require<shape_error>(gb.empty() || (gb.rank() == 1 && gb.dim(0) == g.dim(0)),
                       "deepen: bias must have shape (", g.dim(0), "), got ",
                       shape_string(gb.shape()));
  require_finite(g, "deepen", "weight");
  require_finite(gb, "deepen", "bias");
  require<value_error>(parent.options.stride >= 1, "deepen: stride must be >= 1, got ",
                       parent.options.stride);
  require<value_error>(parent.options.padding >= 0, "deepen: padding must be >= 0, got ",
                       parent.options.padding);
  check_conv2d_groups(g, parent.options.groups, "deepen");
}

inline void check_deepen_options(const deepen_options& opt) {
  require<value_error>(opt.tolerance > 0 && std::isfinite(opt.tolerance),
                       "deepen: tolerance must be positive and finite, got ", opt.tolerance);
  require<value_error>(opt.max_iter >= 1, "deepen: max_iter must be >= 1, got ", opt.max_iter);
  require<value_error>(opt.noise >= 0 && std::isfinite(opt.noise),
                       "deepen: noise must be >= 0 and finite, got ", opt.noise);
  check_probe_options(opt.probe, "deepen");
}

/// Refuses, before anything is allocated, child tensors and solver systems beyond
/// `max_tensor_elements` (everything is solved in double).
inline void require_depth_memory(const depth_sizes& s) {
  require_allocatable("deepen", "F1", {s.c1, s.c0, s.k1, s.k1}, sizeof(double));
  require_allocatable("deepen", "F2", {s.c2, s.c1, s.k2, s.k2}, sizeof(double));
}

/// The sizes `deepen` works with: C1, K1, K2 derived from the parent where the options say 0,
/// every size checked (in this order: positivity, memory, IdMorph's, then K~'s).
template <typename Scalar>
depth_sizes resolve_depth_sizes(const conv2d_weights<Scalar>& parent, const deepen_options& opt) {
  depth_sizes s;
  s.c2 = parent.weight.dim(0);
  s.c0 = parent.weight.dim(1);
  s.k = parent.weight.dim(2);
  s.c1 = opt.mid_channels == 0 ? s.c2 : opt.mid_channels;
  s.k1 = opt.k1 == 0 ? s.k : opt.k1;
  s.k2 = opt.k2 == 0 ? 1 : opt.k2;
  s.stride = parent.options.stride;
  s.pad = parent.options.padding;
  require<value_error>(s.c1 >= 1, "deepen: C1 (mid_channels) must be >= 1, got ", s.c1);
  require<value_error>(s.k1 >= 1 && s.k2 >= 1, "deepen: kernels must be >= 1, got K1 = ", s.k1,
                       ", K2 = ", s.k2);
  require_depth_memory(s);
  const bool idmorph = opt.algorithm == depth_algorithm::idmorph;
  if (idmorph) {
    require<value_error>(s.c1 == s.c2,
                         "deepen: IdMorph needs C1 = C2 (the identity is square), got C1 = ", s.c1,
                         ", C2 = ", s.c2);
    require<value_error>(s.k1 == s.k, "deepen: IdMorph needs K1 = K = ", s.k,
                         " (F1 is G), got K1 = ", s.k1);
    require<value_error>(s.k2 % 2 == 1,
                         "deepen: IdMorph needs an odd K2 for a centred identity, got ", s.k2);
  }
  s.kt = s.k1 + s.k2 - 1;
  require<value_error>(s.kt >= s.k, "deepen: K~ = K1 + K2 - 1 = ", s.k1, " + ", s.k2,
                       " - 1 = ", s.kt, " is smaller than the parent's kernel K = ", s.k);
  require<value_error>((s.kt - s.k) % 2 == 0, "deepen: K~ = K1 + K2 - 1 = ", s.kt,
                       " grows the parent's kernel K = ", s.k, " by ", s.kt - s.k,
                       "; a centred zero-padding needs an even growth");
  require_allocatable("deepen", "G~", {s.c2, s.c0, s.kt, s.kt}, sizeof(double));
  // Where the stride goes: exact on the second layer (any K2) or on the first when K2 = 1.
  s.stride_first = s.k2 == 1;
  if (opt.stride == stride_placement::first) s.stride_first = true;
  if (opt.stride == stride_placement::second) s.stride_first = false;
  require<value_error>(s.stride == 1 || !s.stride_first || s.k2 == 1 || idmorph, "deepen: stride ",
                       s.stride, " cannot go on the first child layer when K2 = ", s.k2,
                       " > 1: the second layer would mix positions the first one skipped");
  if (opt.padding == depth_padding::same && !idmorph) {
    const index_type pf = s.pad + (s.kt - s.k) / 2 - (s.k2 - 1) / 2;
    require<value_error>(pf >= 0 && s.k2 % 2 == 1, "deepen: 'same' padding needs an odd K2 and ",
                         "padding + (K1 - K)/2 >= 0, got K2 = ", s.k2, ", padding ", s.pad,
                         ", K1 = ", s.k1, ", K = ", s.k);
  }
  return s;
}

/// The factors of a depth morph in double and how they were found.
struct depth_factors {
  tensor<double> f1, f2;
  index_type solved_k1 = 0, solved_k2 = 0;
  int iterations = 0, half_steps = 0;
  double residual = 0;
  bool fallback = false, kronecker = false;
};

/// A random filter whose `(O, I*K*K)` matrix has orthonormal rows or columns (Gaussian, then
/// the Q of its QR decomposition).
template <typename Rng>
tensor<double> random_semi_orthogonal(shape_type shape, Rng& rng) {
  tensor<double> t = tensor<double>::random_normal(std::move(shape), rng);
  const index_type rows = t.dim(0), cols = t.size() / std::max<index_type>(rows, 1);
  if (rows == 0 || cols == 0) return t;
  auto m = t.matrix(rows, cols);
  if (rows >= cols) {
    const Eigen::MatrixXd a = m;
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
    m = qr.householderQ() * Eigen::MatrixXd::Identity(rows, cols);
  } else {
    const Eigen::MatrixXd a = m.transpose();
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
    m = (qr.householderQ() * Eigen::MatrixXd::Identity(cols, rows)).transpose();
  }
  return t;
}

template <typename Real>
double rel_residual(const tensor<Real>& gt, const tensor<Real>& f2, const tensor<Real>& f1) {
  const tensor<double> c = compose(f2, f1);
  const double den = gt.vector().norm();
  const double num = (c.vector() - gt.vector()).norm();
  return den > 0 ? num / den : num;
}

/// The settings of every half-step of a depth morph.
inline solve::factor_solve_options half_step_options(const deepen_options& opt) {
  solve::factor_solve_options s;
  s.noise = opt.noise;
  s.exact_tolerance = opt.tolerance;
  return s;
}

/// Algorithm 1 at fixed kernel sizes: random init, alternate the half-steps, starting with the
/// one that can be exact, until the residual reaches `opt.tolerance` or `max_iter` iterations ran.
template <typename Rng>
depth_factors algorithm1(const tensor<double>& gt, const depth_sizes& sz, index_type k1,
                         index_type k2, const deepen_options& opt, int max_iter, Rng& rng) {
  const depth_counts counts = sz.counts(k1, k2);
  const solve::factor_solve_options settings = half_step_options(opt);
  depth_factors s;
  s.solved_k1 = k1;
  s.solved_k2 = k2;
  // Start with the half-step whose system is underdetermined (it can be exact at once). The
  // fixed factor starts as a random semi-orthogonal matrix: dense, and as well-conditioned as a
  // random filter can be, so the first solve loses no accuracy (a Gaussian square factor
  // would square a condition number of 1e3-1e4 in the Gram matrix).
  const bool f1_first = counts.f1_step_exact() && !counts.f2_step_exact();
  if (f1_first) {
    s.f2 = random_semi_orthogonal({sz.c2, sz.c1, k2, k2}, rng);
  } else {
    s.f1 = random_semi_orthogonal({sz.c1, sz.c0, k1, k1}, rng);
  }
  bool do_f1 = f1_first;
  const int max_half = 2 * std::max(1, max_iter);
  s.residual = -1;
  for (int h = 0; h < max_half; ++h) {
    solve::factor_solve_result r = do_f1 ? solve::solve_first_factor(gt, s.f2, k1, rng, settings)
                                         : solve::solve_second_factor(gt, s.f1, k2, rng, settings);
    (do_f1 ? s.f1 : s.f2) = std::move(r.x);
    ++s.half_steps;
    s.fallback = s.fallback || r.report.route == solve::ls_route::cod;
    s.kronecker = s.kronecker || r.report.kronecker;
    do_f1 = !do_f1;
    // The solver measured the residual of exactly this equation with the other factor fixed.
    s.residual = r.report.relative_residual;
    if (s.residual <= opt.tolerance) break;
  }
  NETMORPH_ASSERT(!s.f1.empty() && !s.f2.empty());
  s.iterations = (s.half_steps + 1) / 2;
  return s;
}

/// IdMorph (Net2Net's deeper op): F1 = G, F2 = the identity filter.
template <typename Real>
depth_factors idmorph_factors(const tensor<Real>& gd, const depth_sizes& sz) {
  depth_factors s;
  s.f1 = gd;
  s.f2 = identity_filter<double>(sz.c2, sz.k2);
  s.solved_k1 = sz.k1;
  s.solved_k2 = sz.k2;
  s.residual = rel_residual(pad_kernel(gd, sz.kt, sz.kt), s.f2, s.f1);
  return s;
}

/// Kernel sizes to try: the requested ones, then (Algorithm 2) the kernel of the layer that does
/// not expand G shrunk step by step while K1 + K2 - 1 >= K, the largest one-step candidates first.
inline std::vector<std::pair<index_type, index_type>> depth_candidates(const depth_sizes& sz,
                                                                       depth_algorithm algorithm) {
  std::vector<std::pair<index_type, index_type>> candidates{{sz.k1, sz.k2}};
  if (algorithm != depth_algorithm::practical) return candidates;
  // F1 alone can hold G when K1 >= K: then F2's kernel is the one that does not expand G.
  const bool shrink_second_first = sz.k1 >= sz.k;
  for (int pass = 0; pass < 2; ++pass) {
    const bool shrink_second = (pass == 0) == shrink_second_first;
    for (index_type s = (shrink_second ? sz.k2 : sz.k1) - 2; s >= 1; s -= 2) {
      const index_type a = shrink_second ? sz.k1 : s, b = shrink_second ? s : sz.k2;
      if (a + b - 1 < sz.k) break;
      candidates.emplace_back(a, b);
    }
  }
  std::stable_partition(candidates.begin(), candidates.end(),
                        [&](const auto& kk) { return sz.counts(kk.first, kk.second).one_step(); });
  return candidates;
}

/// Algorithms 1 and 2: Algorithm 1 on each candidate until one reaches the tolerance; the best
/// one, its factors zero-padded back to the requested kernels. The residual is recomputed from
/// the composed filters (the half-steps estimate theirs from the Gram matrices).
template <typename Rng>
depth_factors solve_depth(const tensor<double>& gd, const depth_sizes& sz,
                          const deepen_options& opt, Rng& rng) {
  const auto candidates = depth_candidates(sz, opt.algorithm);
  // G~ at kernel t: G itself, or a zero-padded copy (no copy of a large dense G).
  tensor<double> padded;
  auto g_tilde = [&](index_type t) -> const tensor<double>& {
    if (t == sz.k) return gd;
    padded = pad_kernel(gd, t, t);
    return padded;
  };
  depth_factors best;
  int total_half = 0;
  for (std::size_t ci = 0; ci < candidates.size(); ++ci) {
    const index_type a = candidates[ci].first, b = candidates[ci].second, t = a + b - 1;
    // A candidate predicted exact in one step that misses (a structurally rank-deficient
    // system) gets a few alternations only when smaller candidates remain to be tried.
    const int iters = ci + 1 < candidates.size() ? std::min(opt.max_iter, 10) : opt.max_iter;
    depth_factors s = algorithm1(g_tilde(t), sz, a, b, opt, iters, rng);
    total_half += s.half_steps;
    if (best.solved_k1 == 0 || s.residual < best.residual) best = std::move(s);
    if (best.residual <= opt.tolerance) break;
  }
  best.half_steps = total_half;
  const index_type ts = best.solved_k1 + best.solved_k2 - 1;
  best.residual = rel_residual(g_tilde(ts), best.f2, best.f1);
  // When Algorithm 2 shrank because the requested sizes fail the one-step condition, both
  // full-size half-steps are overdetermined: with the other factor fixed, the zero-padded
  // solution is the unique exact one, so one more half-step at the full size cannot fill the
  // padded taps. (When a one-step candidate missed its tolerance, a rank-deficient system, a
  // null-space fill could exist; it is not attempted.) The taps stay zero and the report's notes
  // say so.
  if (best.solved_k1 != sz.k1) best.f1 = pad_kernel(best.f1, sz.k1, sz.k1);
  if (best.solved_k2 != sz.k2) best.f2 = pad_kernel(best.f2, sz.k2, sz.k2);
  return best;
}

/// F1 *= a, F2 /= a with a = sqrt(std(F2) / std(F1)): both get the same std (exact because the
/// activation between them is linear at creation).
inline void equalise_scale(depth_factors& s) {
  const double s1 = stddev(s.f1), s2 = stddev(s.f2);
  if (s1 > 0 && s2 > 0) {
    const double a = std::sqrt(s2 / s1);
    s.f1.vector() *= a;
    s.f2.vector() /= a;
  }
}

/// b1 (random of the parent bias's RMS size, or zero) and b2 = g - F2 (*) b1, so that the
/// composed bias is the parent's; both empty when the parent has no bias.
template <typename Rng>
std::pair<tensor<double>, tensor<double>> depth_biases(const tensor<double>& gb,
                                                       const tensor<double>& f2, index_type c1,
                                                       bool random_bias, Rng& rng) {
  if (gb.empty()) return {};
  tensor<double> b1({c1});
  auto rms = [](const tensor<double>& t) {
    return t.size() ? t.vector().norm() / std::sqrt(double(t.size())) : 0.0;
  };
  const double sb = rms(gb);
  if (random_bias && sb > 0) {
    // b1 of the parent bias's RMS size, shrunk where F2 (*) b1 (which b2 must cancel) would be
    // larger than that: the child then carries no large cancelling offsets, which would cost
    // float accuracy.
    std::normal_distribution<double> normal(0.0, sb);
    for (double& v : b1)
      v = normal(rng);
    const double sc = rms(compose_bias(f2, b1, tensor<double>()));
    if (sc > sb) b1.vector() *= sb / sc;
  }
  tensor<double> b2 = gb;
  b2.vector() -= compose_bias(f2, b1, tensor<double>()).vector();
  return {std::move(b1), std::move(b2)};
}

/// Stride and padding of the two child layers (docs/DESIGN.md §3.6: borders are part of exact).
inline std::pair<conv2d_options, conv2d_options> depth_paddings(const depth_sizes& sz,
                                                                const deepen_options& opt) {
  if (opt.algorithm == depth_algorithm::idmorph) {
    // F2 is a centred delta: "same" padding on it is exact and the stride stays on G.
    return {conv2d_options{sz.stride, sz.pad}, conv2d_options{1, (sz.k2 - 1) / 2}};
  }
  const index_type s1 = sz.stride_first ? sz.stride : 1, s2 = sz.stride_first ? 1 : sz.stride;
  if (opt.padding == depth_padding::exact)
    return {conv2d_options{s1, sz.pad + (sz.kt - sz.k) / 2}, conv2d_options{s2, 0}};
  return {conv2d_options{s1, sz.pad + (sz.kt - sz.k) / 2 - (sz.k2 - 1) / 2},
          conv2d_options{s2, (sz.k2 - 1) / 2}};
}

/// The report of a depth morph, without the probes and the time.
inline morph_report depth_report(const depth_sizes& sz, const depth_factors& s,
                                 const deepen_options& opt, const tensor<double>& f1,
                                 const tensor<double>& f2) {
  morph_report rep;
  rep.operation = "deepen";
  rep.algorithm = to_string(opt.algorithm);
  rep.relative_residual = s.residual;
  const bool idmorph = opt.algorithm == depth_algorithm::idmorph;
  rep.exact = s.residual <= opt.tolerance && (opt.padding == depth_padding::exact || idmorph);
  depth_details d;
  d.c0 = sz.c0;
  d.c1 = sz.c1;
  d.c2 = sz.c2;
  d.k = sz.k;
  d.k1 = sz.k1;
  d.k2 = sz.k2;
  d.solved_k1 = s.solved_k1;
  d.solved_k2 = s.solved_k2;
  const depth_counts counts = sz.counts(s.solved_k1, s.solved_k2);
  d.condition7 = counts.condition7();
  d.one_step = counts.one_step();
  d.iterations = s.iterations;
  d.half_steps = s.half_steps;
  d.fallback = s.fallback;
  d.kronecker = s.kronecker;
  rep.depth = d;
  rep.new_tensors.push_back(summarize("F1", f1));
  rep.new_tensors.push_back(summarize("F2", f2));
  const auto padded = [&](const char* name, index_type solved, index_type size,
                          const tensor<double>& f) {
    if (solved == size) return;
    rep.notes.push_back(cat(name, " was solved at ", solved, "x", solved, " and zero-padded to ",
                            size, "x", size, ": ", std::lround(100.0 * (1.0 - nonzero_fraction(f))),
                            "% of its weights are zero; a dense ", size, "x", size, " ", name,
                            " needs C1 >= ", sz.dense_mid_channels(), " (C1 is ", sz.c1, ")."));
  };
  if (!idmorph) {
    padded("F1", s.solved_k1, sz.k1, f1);
    padded("F2", s.solved_k2, sz.k2, f2);
  }
  if (opt.padding == depth_padding::same && !idmorph)
    rep.notes.push_back(
        "The 'same' paddings cut and re-pad the intermediate blob: the child is approximate at "
        "the border (see the output error).");
  if (s.residual > opt.tolerance)
    rep.notes.push_back(cat("Eq. 6 misses the tolerance ", opt.tolerance, ": relative residual ",
                            s.residual, "; the child is approximate."));
  return rep;
}

template <typename Scalar>
std::pair<std::pair<conv2d_weights<double>, conv2d_weights<double>>, morph_report>
deepen_grouped_double(const conv2d_weights<Scalar>& parent, const deepen_options& opt);

/// The child layers in double: factors, rescaling, biases, paddings; and the report.
template <typename Scalar>
std::pair<std::pair<conv2d_weights<double>, conv2d_weights<double>>, morph_report> deepen_double(
    const conv2d_weights<Scalar>& parent, const deepen_options& opt) {
  check_deepen_parent(parent);
  check_deepen_options(opt);
  if (parent.options.groups != 1) return deepen_grouped_double(parent, opt);
  const depth_sizes sz = resolve_depth_sizes(parent, opt);
  std::mt19937_64 rng(opt.seed);
  const tensor<double> gd = parent.weight.template cast<double>();
  const tensor<double> gb =
      parent.bias.empty() ? tensor<double>() : parent.bias.template cast<double>();
  const bool idmorph = opt.algorithm == depth_algorithm::idmorph;
  depth_factors s = idmorph ? idmorph_factors(gd, sz) : solve_depth(gd, sz, opt, rng);
  if (opt.require_exact && s.residual > opt.tolerance) {
    throw numerical_error(cat("deepen: relative residual ", s.residual,
                              " of eq. 6 exceeds the tolerance ", opt.tolerance, " after ",
                              s.half_steps, " half-steps (C0 = ", sz.c0, ", C1 = ", sz.c1,
                              ", C2 = ", sz.c2, ", K = ", sz.k, ", K1 = ", sz.k1, ", K2 = ", sz.k2,
                              "); widen C1, raise max_iter, or set require_exact = false"));
  }
  std::pair<tensor<double>, tensor<double>> b;
  if (idmorph) {
    if (!gb.empty()) b = {gb, tensor<double>({sz.c2})};
  } else {
    if (opt.rescale) equalise_scale(s);
    b = depth_biases(gb, s.f2, sz.c1, opt.random_bias, rng);
  }
  const auto p = depth_paddings(sz, opt);
  morph_report rep = depth_report(sz, s, opt, s.f1, s.f2);
  // Named, so that the layers are moved into the result (a braced pair would be copied).
  std::pair<conv2d_weights<double>, conv2d_weights<double>> layers{
      conv2d_weights<double>{std::move(s.f1), std::move(b.first), p.first},
      conv2d_weights<double>{std::move(s.f2), std::move(b.second), p.second}};
  return {std::move(layers), std::move(rep)};
}

/// Rows `[first, first + count)` of a tensor along its first axis (a contiguous block).
template <typename Scalar>
tensor<Scalar> leading_rows(const tensor<Scalar>& t, index_type first, index_type count) {
  if (t.empty()) return tensor<Scalar>();
  shape_type s = t.shape();
  const index_type row = t.size() / s[0];
  s[0] = count;
  tensor<Scalar> r(s);
  std::copy(t.data() + first * row, t.data() + (first + count) * row, r.data());
  return r;
}

/// The tensors stacked along their first axis (all of one shape after it); empty when they are.
inline tensor<double> stacked_rows(const std::vector<tensor<double>>& parts) {
  if (parts.empty() || parts.front().empty()) return tensor<double>();
  shape_type s = parts.front().shape();
  s[0] *= static_cast<index_type>(parts.size());
  tensor<double> r(s);
  double* out = r.data();
  for (const tensor<double>& p : parts)
    out = std::copy(p.begin(), p.end(), out);
  return r;
}

/// Depth morph of a grouped convolution (docs/DESIGN.md §3.8): each group is an ungrouped
/// convolution `(C2/G, C0/G, K, K)`, deepened on its own (its seed mixed with the group index, so
/// no two groups get the same random parts) into `C1/G` intermediate channels; the children are
/// the groups' layers stacked, grouped `G` times again. Exact when every group is.
template <typename Scalar>
std::pair<std::pair<conv2d_weights<double>, conv2d_weights<double>>, morph_report>
deepen_grouped_double(const conv2d_weights<Scalar>& parent, const deepen_options& opt) {
  const index_type groups = parent.options.groups, c2 = parent.weight.dim(0),
                   c1 = opt.mid_channels == 0 ? c2 : opt.mid_channels, c2g = c2 / groups;
  require<value_error>(c1 % groups == 0, "deepen: a grouped convolution (groups = ", groups,
                       ") deepens group by group; C1 (mid_channels) = ", c1,
                       " must be a multiple of the groups");
  require<value_error>(opt.algorithm != depth_algorithm::idmorph || c1 == c2,
                       "deepen: IdMorph of a grouped convolution needs C1 = C2 = ", c2, ", got ",
                       c1);
  const conv2d_options one{parent.options.stride, parent.options.padding, 1};
  std::vector<tensor<double>> w1, b1, w2, b2;
  morph_report rep;
  for (index_type g = 0; g < groups; ++g) {
    const conv2d_weights<Scalar> part{leading_rows(parent.weight, g * c2g, c2g),
                                      leading_rows(parent.bias, g * c2g, c2g), one};
    deepen_options o = opt;
    o.mid_channels = c1 / groups;
    o.seed = mix_seed(opt.seed, static_cast<std::uint64_t>(g));
    auto d = deepen_double(part, o);
    if (g == 0) {
      rep = std::move(d.second);
    } else {
      rep.relative_residual = std::max(*rep.relative_residual, *d.second.relative_residual);
      rep.exact = rep.exact && d.second.exact;
      rep.depth->iterations = std::max(rep.depth->iterations, d.second.depth->iterations);
      rep.depth->half_steps = std::max(rep.depth->half_steps, d.second.depth->half_steps);
      rep.depth->fallback = rep.depth->fallback || d.second.depth->fallback;
      for (std::string& note : d.second.notes)  // a note of another group, unless said already
        if (std::find(rep.notes.begin(), rep.notes.end(), note) == rep.notes.end())
          rep.notes.push_back(cat("Group ", g, ": ", std::move(note)));
    }
    w1.push_back(std::move(d.first.first.weight));
    b1.push_back(std::move(d.first.first.bias));
    w2.push_back(std::move(d.first.second.weight));
    b2.push_back(std::move(d.first.second.bias));
    if (g + 1 == groups) {
      conv2d_options p1 = d.first.first.options, p2 = d.first.second.options;
      p1.groups = p2.groups = groups;
      std::pair<conv2d_weights<double>, conv2d_weights<double>> layers{
          conv2d_weights<double>{stacked_rows(w1), stacked_rows(b1), p1},
          conv2d_weights<double>{stacked_rows(w2), stacked_rows(b2), p2}};
      rep.depth->c0 = parent.weight.dim(1) * groups;
      rep.depth->c1 = c1;
      rep.depth->c2 = c2;
      rep.new_tensors = {summarize("F1", layers.first.weight),
                         summarize("F2", layers.second.weight)};
      rep.notes.push_back(cat("Solved group by group: ", groups, " groups of ", c2g,
                              " filters; the child layers are grouped ", groups,
                              " times; the residual and iteration counts are the largest "
                              "group's, the solved kernels and conditions group 0's (every "
                              "group has the same sizes), the notes above group 0's and any "
                              "other group's that differ."));
      return {std::move(layers), std::move(rep)};
    }
  }
  return {};  // not reached: groups >= 1
}

template <typename Scalar>
tensor<Scalar> cast_tensor(const tensor<double>& t) {
  return t.empty() ? tensor<Scalar>() : t.template cast<Scalar>();
}
/// As above; a double tensor is moved, not copied.
template <typename Scalar>
tensor<Scalar> cast_tensor(tensor<double>&& t) {
  if constexpr (std::is_same<Scalar, double>::value) {
    return std::move(t);
  } else {
    return cast_tensor<Scalar>(static_cast<const tensor<double>&>(t));
  }
}

/// The storage-scalar result around the double child layers: the optional identity batch norm,
/// the P-activation at a = 1, and the probes.
template <typename Weights, typename Make, typename Parent>
deepen_result<Weights> finish_deepen(
    std::pair<std::pair<conv2d_weights<double>, conv2d_weights<double>>, morph_report> d,
    const deepen_options& opt, Make&& make,
    const std::optional<tensor<typename Weights::scalar_type>>& probe, const Parent& parent,
    std::chrono::steady_clock::time_point t0) {
  using Scalar = typename Weights::scalar_type;
  deepen_result<Weights> r;
  const index_type c1 = d.first.first.weight.dim(0);
  r.first = make(std::move(d.first.first));
  r.second = make(std::move(d.first.second));
  r.report = std::move(d.second);
  if (opt.insert_batch_norm) {
    batch_norm_weights<Scalar> bn = batch_norm_weights<Scalar>::identity(c1);
    for (Scalar& g : bn.gamma)
      g = static_cast<Scalar>(std::sqrt(1.0 + bn.eps));
    r.batch_norm = std::move(bn);
  }
  r.between = make_p_activation(opt.phi.value_or(activation_fn{}), 1.0);
  measure_probes(
      r.report, probe, [&](const tensor<Scalar>& x) { return forward_layer(x, parent); },
      [&](const tensor<Scalar>& x) { return forward(x, r); });
  r.report.seconds = seconds_since(t0);
  return r;
}

}  // namespace detail

/// Depth morph of a convolution: \f$ G \to F_1, F_2 \f$ with
/// \f$ \tilde G[o,i](w) = \sum_c \sum_{u+v=w} F_2[o,c](v)\, F_1[c,i](u) \f$ (paper eq. 6) and
/// \f$ b_2[o] = g[o] - \sum_{c,v} F_2[o,c](v)\, b_1[c] \f$, so that
/// `forward(x, result) == conv2d(x, parent)` for every x (docs/DESIGN.md §3): `result.between` is a
/// P-activation at a = 1 (the identity at creation), `result.batch_norm` the identity.
///
/// \param parent weight `(C2, C0, K, K)`, bias `(C2)` or empty, stride, padding
/// \returns the child layers (biases empty when the parent has none) and a report with the
///          residual and the output error measured on random probe inputs.
/// \throws shape_error   on a weight that is not OIHW with a square kernel, or a bad bias length
/// \throws value_error   on NaN/Inf weights, C1 < 1, a kernel < 1, K1 + K2 - 1 < K, an odd
///                       difference K1 + K2 - 1 - K, a stride the child cannot place, options
///                       out of range, an IdMorph request it cannot meet, or child tensors
///                       beyond `max_tensor_elements`
/// \throws numerical_error when `require_exact` and eq. 6 misses `tolerance`
template <typename Scalar>
deepen_result<conv2d_weights<Scalar>> deepen(const conv2d_weights<Scalar>& parent,
                                             const deepen_options& opt = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  auto d = detail::deepen_double(parent, opt);
  const index_type k = parent.weight.dim(2),
                   kt = d.first.first.weight.dim(2) + d.first.second.weight.dim(2) - 1;
  const index_type side =
      detail::probe_side(opt.probe, k, parent.options.padding, parent.options.stride, kt - k);
  const auto probe = detail::probe_input<Scalar>(
      opt.probe, {parent.weight.dim(1) * parent.options.groups, side, side}, opt.seed);
  return detail::finish_deepen<conv2d_weights<Scalar>>(
      std::move(d), opt,
      [](conv2d_weights<double>&& l) {
        return conv2d_weights<Scalar>{detail::cast_tensor<Scalar>(std::move(l.weight)),
                                      detail::cast_tensor<Scalar>(std::move(l.bias)), l.options};
      },
      probe, parent, t0);
}

/// Depth morph of a dense layer `W (out, in)`: `W = W2 W1`, `b = b2 + W2 b1` (the K = 1 case of
/// the convolution morph, through the same code). Options `k1`, `k2` must be 0 or 1 and the
/// padding `exact`.
/// \throws as the convolution overload; shape_error when the weight is not `(out, in)`.
template <typename Scalar>
deepen_result<dense_weights<Scalar>> deepen(const dense_weights<Scalar>& parent,
                                            const deepen_options& opt = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  detail::require<shape_error>(parent.weight.rank() == 2,
                               "deepen: dense weight must be (out, in), got shape ",
                               detail::shape_string(parent.weight.shape()));
  detail::require<value_error>(opt.k1 <= 1 && opt.k2 <= 1,
                               "deepen: a dense layer has 1x1 kernels, got K1 = ", opt.k1,
                               ", K2 = ", opt.k2);
  detail::require<value_error>(opt.padding == depth_padding::exact,
                               "deepen: a dense layer has no padding to choose");
  const index_type out = parent.weight.dim(0), in = parent.weight.dim(1);
  const conv2d_weights<Scalar> conv{parent.weight.reshape({out, in, 1, 1}), parent.bias, {}};
  auto d = detail::deepen_double(conv, opt);
  const auto probe = detail::probe_input<Scalar>(opt.probe, {in}, opt.seed);
  return detail::finish_deepen<dense_weights<Scalar>>(
      std::move(d), opt,
      [](conv2d_weights<double>&& l) {
        const index_type o = l.weight.dim(0), i = l.weight.dim(1);
        return dense_weights<Scalar>{
            detail::cast_tensor<Scalar>(std::move(l.weight).reshape({o, i})),
            detail::cast_tensor<Scalar>(std::move(l.bias))};
      },
      probe, parent, t0);
}

}  // namespace netmorph

#endif  // NETMORPH_MORPH_DEPTH_HPP

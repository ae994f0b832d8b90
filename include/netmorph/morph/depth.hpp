#ifndef NETMORPH_MORPH_DEPTH_HPP
#define NETMORPH_MORPH_DEPTH_HPP

/// \file depth.hpp
/// Depth morphing (paper §3.1-3.2, DESIGN §3): one convolution or dense layer `G` becomes two
/// layers `F1`, `F2` whose composition equals `G` exactly, borders and biases included.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
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
#include <random>
#include <sstream>
#include <string>
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

inline const char* to_string(depth_algorithm a) {
  switch (a) {
    case depth_algorithm::practical:
      return "practical (Algorithm 2)";
    case depth_algorithm::general:
      return "general (Algorithm 1)";
    default:
      return "idmorph";
  }
}

/// Options of `deepen`; the defaults give an exact morph `C1 = C2`, `K1 = K`, `K2 = 1`.
struct deepen_options {
  index_type mid_channels = 0;  ///< C1, channels of the new intermediate blob; 0 means C2
  index_type k1 = 0;            ///< kernel of the first child layer; 0 means the parent's K
  index_type k2 = 1;            ///< kernel of the second child layer
  depth_algorithm algorithm = depth_algorithm::practical;
  depth_padding padding = depth_padding::exact;
  stride_placement stride = stride_placement::automatic;
  std::uint64_t seed = 0;      ///< seeds the random initialisation, null-space noise and probes
  double tolerance = 1e-10;    ///< target relative residual of eq. 6, solved in double
  int max_iter = 100;          ///< Algorithm 1 iterations (pairs of half-steps) at most
  double noise = 1.0;          ///< null-space component, relative to the minimum-norm solution
  bool random_bias = true;     ///< random b1 of the RMS size of g (else 0); b2 = g - F2 (*) b1
  bool rescale = true;         ///< equalise the std of F1 and F2 (F1 *= a, b1 *= a, F2 /= a)
  bool require_exact = true;   ///< throw numerical_error when eq. 6 misses the tolerance
  index_type probe_count = 4;  ///< random inputs on which the child is compared with the parent
  index_type probe_size = 0;   ///< spatial size of the probes; 0 chooses one with every border
};

/// What a depth morph did and how exact it is.
struct deepen_report {
  depth_algorithm algorithm = depth_algorithm::practical;
  index_type c0 = 0, c1 = 0, c2 = 0, k = 0;  ///< parent (C2, C0, K, K) and the new width C1
  index_type k1 = 0, k2 = 0;                 ///< kernels of the child layers
  index_type solved_k1 = 0, solved_k2 = 0;   ///< kernels actually solved for (Algorithm 2 shrinks)
  bool condition7 = false;       ///< min(C1 C0 K1^2, C2 C1 K2^2) >= C2 C0 K~^2: both half-steps
                                 ///< underdetermined (DESIGN §3), at the solved kernel sizes
  bool one_step = false;         ///< max(...) >= C2 C0 K~^2: at least one half-step can be exact
  int iterations = 0;            ///< Algorithm 1 iterations started (1 = converged in one step)
  int half_steps = 0;            ///< least-squares half-steps solved
  bool fallback = false;         ///< some half-step used the rank-revealing (COD) fallback
  bool kronecker = false;        ///< some half-step was reduced by Kronecker structure
  double relative_residual = 0;  ///< ||G~ - F2 (*) F1|| / ||G~|| in double
  double max_output_error = 0;   ///< max |child - parent| on the probe inputs (storage scalar)
  double relative_output_error = 0;  ///< ||child - parent|| / ||parent|| on the probes
  bool exact = false;                ///< residual at tolerance and exact borders (padding exact)
  double nonzero_first = 0, nonzero_second = 0;  ///< fraction of non-zero weights of F1, F2
  double std_first = 0, std_second = 0;          ///< std of the weights of F1, F2
  double seconds = 0;                            ///< wall time of the whole morph

  /// One line per fact, for printing.
  std::string summary() const {
    std::ostringstream os;
    os.precision(3);
    os << "algorithm        " << to_string(algorithm) << "\n"
       << "parent           (" << c2 << ", " << c0 << ", " << k << ", " << k << ")\n"
       << "child            (" << c1 << ", " << c0 << ", " << k1 << ", " << k1 << ") -> (" << c2
       << ", " << c1 << ", " << k2 << ", " << k2 << "), solved at K1=" << solved_k1
       << " K2=" << solved_k2 << "\n"
       << "condition (7)    " << (condition7 ? "holds" : "fails")
       << (one_step ? ", one half-step can be exact" : "") << "\n"
       << "iterations       " << iterations << " (" << half_steps << " half-steps"
       << (kronecker ? ", Kronecker-reduced" : "") << (fallback ? ", COD fallback" : "") << ")\n"
       << "residual         " << std::scientific << relative_residual << "\n"
       << "output error     max " << max_output_error << ", relative " << relative_output_error
       << (exact ? " (exact)" : " (approximate)") << "\n"
       << std::defaultfloat << "non-zero         F1 " << nonzero_first << ", F2 " << nonzero_second
       << "\n"
       << "std              F1 " << std_first << ", F2 " << std_second << "\n"
       << "time             " << seconds << " s\n";
    return os.str();
  }
};

/// The two child layers of a convolution and the report.
template <typename Scalar>
struct deepen_result {
  conv2d_weights<Scalar> first;
  conv2d_weights<Scalar> second;
  deepen_report report;
};

/// The two child layers of a dense layer and the report.
template <typename Scalar>
struct deepen_dense_result {
  dense_weights<Scalar> first;
  dense_weights<Scalar> second;
  deepen_report report;
};

namespace detail {

struct depth_solution {
  tensor<double> f1, f2;
  int iterations = 0, half_steps = 0;
  double residual = 0;
  bool fallback = false, kronecker = false;
};

/// A random filter whose `(O, I*K*K)` matrix has orthonormal rows or columns (Gaussian, then
/// the Q of its QR decomposition).
inline tensor<double> random_semi_orthogonal(shape_type shape, std::mt19937_64& rng) {
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

inline double rel_residual(const tensor<double>& gt, const tensor<double>& f2,
                           const tensor<double>& f1) {
  const tensor<double> c = compose(f2, f1);
  const double den = gt.vector().norm();
  const double num = (c.vector() - gt.vector()).norm();
  return den > 0 ? num / den : num;
}

/// Algorithm 1 at fixed kernel sizes: random init, alternate the half-steps, starting with the
/// one that can be exact, until the residual reaches `tol` or `max_iter` iterations ran.
inline depth_solution algorithm1(const tensor<double>& gt, index_type c1, index_type k1,
                                 index_type k2, double tol, int max_iter, double noise,
                                 std::mt19937_64& rng) {
  const index_type c2 = gt.dim(0), c0 = gt.dim(1), kt = gt.dim(2);
  const bool f1_step_exact = c1 * k1 * k1 >= c2 * kt * kt;
  const bool f2_step_exact = c1 * k2 * k2 >= c0 * kt * kt;
  solve::factor_solve_options settings;
  settings.noise = noise;
  settings.exact_tolerance = tol;
  depth_solution s;
  // Start with the half-step whose system is underdetermined (it can be exact at once). The
  // fixed factor starts as a random semi-orthogonal matrix: dense, and as well-conditioned as a
  // random filter can be, so the first solve loses no accuracy (a Gaussian square factor
  // would square a condition number of 1e3-1e4 in the Gram matrix).
  const bool f1_first = f1_step_exact && !f2_step_exact;
  if (f1_first) {
    s.f2 = random_semi_orthogonal({c2, c1, k2, k2}, rng);
  } else {
    s.f1 = random_semi_orthogonal({c1, c0, k1, k1}, rng);
  }
  bool do_f1 = f1_first;
  const int max_half = 2 * std::max(1, max_iter);
  s.residual = -1;
  for (int h = 0; h < max_half; ++h) {
    solve::factor_solve_report info;
    if (do_f1) {
      s.f1 = solve::solve_first_factor(gt, s.f2, k1, rng, settings, &info);
    } else {
      s.f2 = solve::solve_second_factor(gt, s.f1, k2, rng, settings, &info);
    }
    ++s.half_steps;
    s.fallback = s.fallback || info.route == solve::ls_route::cod;
    s.kronecker = s.kronecker || info.kronecker;
    do_f1 = !do_f1;
    // The solver measured the residual of exactly this equation with the other factor fixed.
    s.residual = info.relative_residual;
    if (s.residual <= tol) break;
  }
  NETMORPH_ASSERT(!s.f1.empty() && !s.f2.empty());
  s.iterations = (s.half_steps + 1) / 2;
  return s;
}

}  // namespace detail

/// Depth morph of a convolution: \f$ G \to F_1, F_2 \f$ with
/// \f$ \tilde G[o,i](w) = \sum_c \sum_{u+v=w} F_2[o,c](v)\, F_1[c,i](u) \f$ (paper eq. 6) and
/// \f$ b_2[o] = g[o] - \sum_{c,v} F_2[o,c](v)\, b_1[c] \f$, so that
/// `conv2d(conv2d(x, first), second) == conv2d(x, parent)` for every input (DESIGN §3). An
/// activation inserted between the child layers must be the identity at creation (a
/// P-activation with a = 1).
///
/// \param parent weight `(C2, C0, K, K)`, bias `(C2)` or empty, stride, padding
/// \returns the child layers (biases empty when the parent has none) and a report with the
///          residual and the output error measured on random probe inputs.
/// \throws shape_error   on a weight that is not OIHW with a square kernel, or a bad bias length
/// \throws value_error   on NaN/Inf weights, C1 < 1, a kernel < 1, K1 + K2 - 1 < K, an odd
///                       difference K1 + K2 - 1 - K, a stride the child cannot place, options
///                       out of range, or an IdMorph request it cannot meet
/// \throws numerical_error when `require_exact` and eq. 6 misses `tolerance`
template <typename Scalar>
deepen_result<Scalar> deepen(const conv2d_weights<Scalar>& parent, const deepen_options& opt = {}) {
  using detail::require;
  const auto t_start = std::chrono::steady_clock::now();
  const tensor<Scalar>& g = parent.weight;
  const tensor<Scalar>& gb = parent.bias;
  require<shape_error>(g.rank() == 4, "deepen: weight must be OIHW (rank 4), got shape ",
                       detail::shape_string(g.shape()));
  require<shape_error>(g.dim(2) == g.dim(3) && g.dim(2) >= 1,
                       "deepen: kernel must be square and non-empty, got ", g.dim(2), "x",
                       g.dim(3));
  require<shape_error>(g.dim(0) >= 1 && g.dim(1) >= 1, "deepen: weight has no channels, shape ",
                       detail::shape_string(g.shape()));
  require<shape_error>(gb.empty() || (gb.rank() == 1 && gb.dim(0) == g.dim(0)),
                       "deepen: bias must have shape (", g.dim(0), "), got ",
                       detail::shape_string(gb.shape()));
  require_finite(g, "deepen", "weight");
  require_finite(gb, "deepen", "bias");
  require<value_error>(parent.options.stride >= 1, "deepen: stride must be >= 1, got ",
                       parent.options.stride);
  require<value_error>(parent.options.padding >= 0, "deepen: padding must be >= 0, got ",
                       parent.options.padding);

  const index_type c2 = g.dim(0), c0 = g.dim(1), k = g.dim(2);
  const index_type c1 = opt.mid_channels == 0 ? c2 : opt.mid_channels;
  const index_type k1 = opt.k1 == 0 ? k : opt.k1, k2 = opt.k2;
  const index_type stride = parent.options.stride, pad = parent.options.padding;
  require<value_error>(c1 >= 1, "deepen: C1 (mid_channels) must be >= 1, got ", c1);
  require<value_error>(k1 >= 1 && k2 >= 1, "deepen: kernels must be >= 1, got K1 = ", k1,
                       ", K2 = ", k2);
  const index_type kt = k1 + k2 - 1;
  require<value_error>(kt >= k, "deepen: K~ = K1 + K2 - 1 = ", k1, " + ", k2, " - 1 = ", kt,
                       " is smaller than the parent's kernel K = ", k);
  require<value_error>((kt - k) % 2 == 0, "deepen: K~ = K1 + K2 - 1 = ", kt,
                       " grows the parent's kernel K = ", k, " by ", kt - k,
                       "; a centred zero-padding needs an even growth");
  require<value_error>(opt.tolerance > 0 && std::isfinite(opt.tolerance),
                       "deepen: tolerance must be positive and finite, got ", opt.tolerance);
  require<value_error>(opt.max_iter >= 1, "deepen: max_iter must be >= 1, got ", opt.max_iter);
  require<value_error>(opt.noise >= 0 && std::isfinite(opt.noise),
                       "deepen: noise must be >= 0 and finite, got ", opt.noise);
  require<value_error>(opt.probe_count >= 0 && opt.probe_size >= 0,
                       "deepen: probe_count and probe_size must be >= 0, got ", opt.probe_count,
                       " and ", opt.probe_size);
  // Where the stride goes: exact on the second layer (any K2) or on the first when K2 = 1.
  bool stride_first = k2 == 1;
  if (opt.stride == stride_placement::first) stride_first = true;
  if (opt.stride == stride_placement::second) stride_first = false;
  require<value_error>(
      stride == 1 || !stride_first || k2 == 1 || opt.algorithm == depth_algorithm::idmorph,
      "deepen: stride ", stride, " cannot go on the first child layer when K2 = ", k2,
      " > 1: the second layer would mix positions the first one skipped");

  std::mt19937_64 rng(opt.seed);
  deepen_report rep;
  rep.algorithm = opt.algorithm;
  rep.c0 = c0;
  rep.c1 = c1;
  rep.c2 = c2;
  rep.k = k;
  rep.k1 = k1;
  rep.k2 = k2;

  const tensor<double> gd = g.template cast<double>();
  tensor<double> f1, f2, b1, b2;
  conv2d_options p1, p2;

  if (opt.algorithm == depth_algorithm::idmorph) {
    require<value_error>(c1 == c2,
                         "deepen: IdMorph needs C1 = C2 (the identity is square), got C1 = ", c1,
                         ", C2 = ", c2);
    require<value_error>(k1 == k, "deepen: IdMorph needs K1 = K = ", k,
                         " (F1 is G), got K1 = ", k1);
    require<value_error>(k2 % 2 == 1,
                         "deepen: IdMorph needs an odd K2 for a centred identity, got ", k2);
    f1 = gd;
    f2 = identity_filter<double>(c2, k2);
    if (!gb.empty()) {
      b1 = gb.template cast<double>();
      b2 = tensor<double>({c2});
    }
    // F2 is a centred delta: "same" padding on it is exact and the stride stays on G.
    p1 = conv2d_options{stride, pad};
    p2 = conv2d_options{1, (k2 - 1) / 2};
    rep.solved_k1 = k1;
    rep.solved_k2 = k2;
    rep.condition7 = std::min(c1 * c0 * k1 * k1, c2 * c1 * k2 * k2) >= c2 * c0 * kt * kt;
    rep.one_step = true;
    rep.relative_residual = detail::rel_residual(pad_kernel(gd, kt, kt), f2, f1);
  } else {
    // Candidate kernel sizes: the requested ones, then (Algorithm 2) the kernel of the layer
    // that does not expand G shrunk step by step while K1 + K2 - 1 >= K.
    std::vector<std::pair<index_type, index_type>> candidates{{k1, k2}};
    if (opt.algorithm == depth_algorithm::practical) {
      // F1 alone can hold G when K1 >= K: then F2's kernel is the one that does not expand G.
      const bool shrink_second_first = k1 >= k;
      for (int pass = 0; pass < 2; ++pass) {
        const bool shrink_second = (pass == 0) == shrink_second_first;
        for (index_type s = (shrink_second ? k2 : k1) - 2; s >= 1; s -= 2) {
          const index_type a = shrink_second ? k1 : s, b = shrink_second ? s : k2;
          if (a + b - 1 < k) break;
          candidates.emplace_back(a, b);
        }
      }
      // Try first the largest candidate for which one half-step can be exact.
      auto one_step = [&](std::pair<index_type, index_type> kk) {
        const index_type t = kk.first + kk.second - 1;
        return c1 * kk.first * kk.first >= c2 * t * t || c1 * kk.second * kk.second >= c0 * t * t;
      };
      std::stable_partition(candidates.begin(), candidates.end(), one_step);
    }
    detail::depth_solution best;
    std::pair<index_type, index_type> best_k{0, 0};
    int total_half = 0;
    for (std::size_t ci = 0; ci < candidates.size(); ++ci) {
      const auto& kk = candidates[ci];
      const index_type a = kk.first, b = kk.second, t = a + b - 1;
      const tensor<double> gt = pad_kernel(gd, t, t);
      // A candidate predicted exact in one step that misses (a structurally rank-deficient
      // system) gets a few alternations only when smaller candidates remain to be tried.
      const int iters = ci + 1 < candidates.size() ? std::min(opt.max_iter, 10) : opt.max_iter;
      detail::depth_solution s =
          detail::algorithm1(gt, c1, a, b, opt.tolerance, iters, opt.noise, rng);
      total_half += s.half_steps;
      if (best_k.first == 0 || s.residual < best.residual) {
        best = std::move(s);
        best_k = kk;
      }
      if (best.residual <= opt.tolerance) break;
    }
    rep.solved_k1 = best_k.first;
    rep.solved_k2 = best_k.second;
    const index_type ts = best_k.first + best_k.second - 1;
    rep.condition7 = std::min(c1 * c0 * best_k.first * best_k.first,
                              c2 * c1 * best_k.second * best_k.second) >= c2 * c0 * ts * ts;
    rep.one_step = std::max(c1 * c0 * best_k.first * best_k.first,
                            c2 * c1 * best_k.second * best_k.second) >= c2 * c0 * ts * ts;
    rep.iterations = best.iterations;
    rep.half_steps = total_half;
    rep.fallback = best.fallback;
    rep.kronecker = best.kronecker;
    // The half-steps measure their residual cheaply (from the Gram matrices); the reported one
    // is recomputed from the composed filters.
    rep.relative_residual = detail::rel_residual(
        pad_kernel(gd, rep.solved_k1 + rep.solved_k2 - 1, rep.solved_k1 + rep.solved_k2 - 1),
        best.f2, best.f1);
    f1 = pad_kernel(best.f1, k1, k1);
    f2 = pad_kernel(best.f2, k2, k2);
    if (opt.rescale) {
      const double s1 = stddev(f1), s2 = stddev(f2);
      if (s1 > 0 && s2 > 0) {
        const double a = std::sqrt(s2 / s1);
        f1.vector() *= a;
        f2.vector() /= a;
      }
    }
    if (!gb.empty()) {
      b1 = tensor<double>({c1});
      auto rms = [](const tensor<double>& t) {
        return t.size() ? t.vector().norm() / std::sqrt(double(t.size())) : 0.0;
      };
      const double sb = rms(gb.template cast<double>());
      if (opt.random_bias && sb > 0) {
        // b1 of the parent bias's RMS size, shrunk where F2 (*) b1 (which b2 must cancel) would
        // be larger than that: the child then carries no large cancelling offsets, which would
        // cost float accuracy.
        std::normal_distribution<double> normal(0.0, sb);
        for (double& v : b1)
          v = normal(rng);
        const double sc = rms(compose_bias(f2, b1, tensor<double>()));
        if (sc > sb) b1.vector() *= sb / sc;
      }
      // b2 = g - F2 (*) b1, so that the composed bias is the parent's.
      tensor<double> neg = compose_bias(f2, b1, tensor<double>());
      b2 = gb.template cast<double>();
      b2.vector() -= neg.vector();
    }
    if (opt.padding == depth_padding::exact) {
      p1 = conv2d_options{stride_first ? stride : 1, pad + (kt - k) / 2};
      p2 = conv2d_options{stride_first ? 1 : stride, 0};
    } else {
      const index_type pf = pad + (kt - k) / 2 - (k2 - 1) / 2;
      require<value_error>(pf >= 0 && k2 % 2 == 1, "deepen: 'same' padding needs an odd K2 and ",
                           "padding + (K1 - K)/2 >= 0, got K2 = ", k2, ", padding ", pad,
                           ", K1 = ", k1, ", K = ", k);
      p1 = conv2d_options{stride_first ? stride : 1, pf};
      p2 = conv2d_options{stride_first ? 1 : stride, (k2 - 1) / 2};
    }
  }

  deepen_result<Scalar> out;
  out.first = conv2d_weights<Scalar>{
      f1.template cast<Scalar>(), b1.empty() ? tensor<Scalar>() : b1.template cast<Scalar>(), p1};
  out.second = conv2d_weights<Scalar>{
      f2.template cast<Scalar>(), b2.empty() ? tensor<Scalar>() : b2.template cast<Scalar>(), p2};
  const bool stride_exact =
      stride == 1 || !stride_first || k2 == 1 || opt.algorithm == depth_algorithm::idmorph;
  rep.exact = rep.relative_residual <= opt.tolerance &&
              (opt.padding == depth_padding::exact || opt.algorithm == depth_algorithm::idmorph) &&
              stride_exact;
  if (opt.require_exact && rep.relative_residual > opt.tolerance) {
    throw numerical_error(detail::cat("deepen: relative residual ", rep.relative_residual,
                                      " of eq. 6 exceeds the tolerance ", opt.tolerance, " after ",
                                      rep.half_steps, " half-steps (C0 = ", c0, ", C1 = ", c1,
                                      ", C2 = ", c2, ", K = ", k, ", K1 = ", k1, ", K2 = ", k2,
                                      "); widen C1, raise max_iter, or set require_exact = false"));
  }

  // Measure the function preservation on random probes, in the storage scalar.
  if (opt.probe_count > 0) {
    const index_type hw = opt.probe_size > 0 ? opt.probe_size
                                             : std::max<index_type>(k + 2 * stride + 3,
                                                                    2 * (kt - k) + 2 * stride + 3) +
                                                   std::max<index_type>(0, k - 2 * pad);
    tensor<Scalar> x = tensor<Scalar>::random_normal({opt.probe_count, c0, hw, hw}, rng);
    const tensor<Scalar> y = conv2d(x, parent);
    const tensor<Scalar> z = conv2d(conv2d(x, out.first), out.second);
    if (y.shape() == z.shape()) {
      rep.max_output_error = max_abs_error(z, y);
      rep.relative_output_error = relative_error(z, y);
    } else {
      rep.max_output_error = rep.relative_output_error = std::numeric_limits<double>::infinity();
      rep.exact = false;
    }
  }
  rep.nonzero_first = nonzero_fraction(out.first.weight);
  rep.nonzero_second = nonzero_fraction(out.second.weight);
  rep.std_first = stddev(out.first.weight);
  rep.std_second = stddev(out.second.weight);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  out.report = rep;
  return out;
}

/// Depth morph of a dense layer `W (out, in)`: `W = W2 W1`, `b = b2 + W2 b1` (the K = 1 case of
/// the convolution morph, through the same code). Options `k1`, `k2` must be 0/1.
/// \throws as the convolution overload; shape_error when the weight is not `(out, in)`.
template <typename Scalar>
deepen_dense_result<Scalar> deepen(const dense_weights<Scalar>& parent, deepen_options opt = {}) {
  detail::require<shape_error>(parent.weight.rank() == 2,
                               "deepen: dense weight must be (out, in), got shape ",
                               detail::shape_string(parent.weight.shape()));
  detail::require<value_error>(opt.k1 <= 1 && opt.k2 == 1,
                               "deepen: a dense layer has 1x1 kernels, got K1 = ", opt.k1,
                               ", K2 = ", opt.k2);
  detail::require<value_error>(opt.padding == depth_padding::exact,
                               "deepen: a dense layer has no padding to choose");
  const index_type out = parent.weight.dim(0), in = parent.weight.dim(1);
  if (opt.probe_size == 0) opt.probe_size = 1;
  conv2d_weights<Scalar> conv{parent.weight.reshape({out, in, 1, 1}), parent.bias,
                              conv2d_options{}};
  deepen_result<Scalar> r = deepen(conv, opt);
  deepen_dense_result<Scalar> d;
  const index_type c1 = r.report.c1;
  d.first = dense_weights<Scalar>{std::move(r.first.weight).reshape({c1, in}), r.first.bias};
  d.second = dense_weights<Scalar>{std::move(r.second.weight).reshape({out, c1}), r.second.bias};
  d.report = r.report;
  return d;
}

}  // namespace netmorph

#endif  // NETMORPH_MORPH_DEPTH_HPP

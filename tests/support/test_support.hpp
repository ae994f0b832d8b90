#ifndef NETMORPH_TESTS_SUPPORT_HPP
#define NETMORPH_TESTS_SUPPORT_HPP

// Shared helpers of the test suite: the one tolerance rule, seeded RNGs drawn from Catch's seed,
// naive-loop reference kernels, and random draws.

#include <netmorph/netmorph.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace nmtest {

using netmorph::index_type;
using idx = netmorph::index_type;
using netmorph::tensor;

/// The suite's "exact" is the library's: relative error at most 1e-9 in double, 1e-4 in float
/// (docs/DESIGN.md §7).
template <typename Scalar>
constexpr double exact_tolerance() {
  return netmorph::exact_tolerance<Scalar>();
}

/// The statistics of the new tensor `name` in a morph report (fails the test when it is absent).
inline netmorph::tensor_summary new_tensor(const netmorph::morph_report& r,
                                           const std::string& name) {
  for (const netmorph::tensor_summary& t : r.new_tensors)
    if (t.name == name) return t;
  FAIL("the report has no new tensor named " << name);
  return {};
}

/// The report's relative output error on its probes (fails the test when it was not measured).
inline double measured_error(const netmorph::morph_report& r) {
  REQUIRE(r.relative_output_error.has_value());
  return *r.relative_output_error;
}

/// Round-off of one double computation done two ways (a structured kernel against its naive
/// loop or explicit matrix), relative to the result's size.
constexpr double reorder_tolerance() {
  return 1e-12;
}

/// Agreement of two solvers on the same well-conditioned least-squares problem (Cholesky on a
/// Gram matrix against an orthogonal decomposition), relative to the solution's size.
constexpr double solver_agreement() {
  return 1e-8;
}

/// The residual at which the library itself calls eq. 6 solved (`deepen_options::tolerance`).
inline double residual_tolerance() {
  return netmorph::deepen_options{}.tolerance;
}

/// An RNG seeded from Catch's `--rng-seed` and a per-test salt, so a failure replays with the
/// seed Catch prints.
inline std::mt19937_64 make_rng(std::uint64_t salt) {
  return std::mt19937_64(std::uint64_t(Catch::rngSeed()) * 0x9E3779B97F4A7C15ull + salt);
}

inline index_type draw(std::mt19937_64& rng, index_type lo, index_type hi) {
  return std::uniform_int_distribution<index_type>(lo, hi)(rng);
}

inline index_type draw_odd(std::mt19937_64& rng, index_type lo, index_type hi) {
  index_type k = draw(rng, lo, hi);
  return (k % 2 == 0) ? (k + 1 <= hi ? k + 1 : k - 1) : k;
}

template <typename Scalar>
tensor<Scalar> randn(netmorph::shape_type shape, std::mt19937_64& rng, double sd = 1.0) {
  return tensor<Scalar>::random_normal(std::move(shape), rng, sd);
}

/// Naive seven-loop convolution (cross-correlation with zero padding), accumulated in double.
template <typename Scalar>
tensor<Scalar> naive_conv2d(const tensor<Scalar>& x, const tensor<Scalar>& w,
                            const tensor<Scalar>& b, index_type stride, index_type pad,
                            index_type groups = 1) {
  const index_type n = x.dim(0), ci = w.dim(1), h = x.dim(2), wd = x.dim(3);
  const index_type co = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const index_type ho = (h + 2 * pad - kh) / stride + 1, wo = (wd + 2 * pad - kw) / stride + 1;
  tensor<Scalar> y({n, co, ho, wo});
  for (index_type s = 0; s < n; ++s)
    for (index_type o = 0; o < co; ++o)
      for (index_type py = 0; py < ho; ++py)
        for (index_type px = 0; px < wo; ++px) {
          double acc = b.empty() ? 0.0 : double(b(o));
          const index_type first = o / (co / groups) * ci;  // the group's first input channel
          for (index_type i = 0; i < ci; ++i)
            for (index_type uy = 0; uy < kh; ++uy)
              for (index_type ux = 0; ux < kw; ++ux) {
                const index_type iy = py * stride + uy - pad, ix = px * stride + ux - pad;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                acc += double(w(o, i, uy, ux)) * double(x(s, first + i, iy, ix));
              }
          y(s, o, py, px) = static_cast<Scalar>(acc);
        }
  return y;
}

/// Naive filter composition, eq. 6 of the paper, accumulated in double.
template <typename Scalar>
tensor<Scalar> naive_compose(const tensor<Scalar>& f2, const tensor<Scalar>& f1) {
  const index_type c2 = f2.dim(0), c1 = f2.dim(1), k2h = f2.dim(2), k2w = f2.dim(3);
  const index_type c0 = f1.dim(1), k1h = f1.dim(2), k1w = f1.dim(3);
  const index_type kh = k1h + k2h - 1, kw = k1w + k2w - 1;
  tensor<Scalar> g({c2, c0, kh, kw});
  for (index_type o = 0; o < c2; ++o)
    for (index_type i = 0; i < c0; ++i)
      for (index_type wy = 0; wy < kh; ++wy)
        for (index_type wx = 0; wx < kw; ++wx) {
          double acc = 0;
          for (index_type c = 0; c < c1; ++c)
            for (index_type vy = 0; vy < k2h; ++vy)
              for (index_type vx = 0; vx < k2w; ++vx) {
                const index_type uy = wy - vy, ux = wx - vx;
                if (uy < 0 || uy >= k1h || ux < 0 || ux >= k1w) continue;
                acc += double(f2(o, c, vy, vx)) * double(f1(c, i, uy, ux));
              }
          g(o, i, wy, wx) = static_cast<Scalar>(acc);
        }
  return g;
}

/// Every activation netmorph knows (`netmorph::activation_kinds`), for the property tests that
/// run over all of them.
inline const std::vector<netmorph::activation_kind>& all_activation_kinds() {
  static const std::vector<netmorph::activation_kind> kinds(netmorph::activation_kinds.begin(),
                                                            netmorph::activation_kinds.end());
  return kinds;
}

/// The points where an activation of netmorph has a kink (relu's 0, relu6's 0 and 6, the hard
/// functions' -3 and 3).
inline constexpr double activation_kinks[] = {-3.0, 0.0, 3.0, 6.0};

/// `x`, moved to at least `margin` from every kink (for finite differences, which a kink within
/// their step would break).
inline double away_from_kinks(double x, double margin = 1e-3) {
  for (const double k : activation_kinks)
    if (std::abs(x - k) < margin) x = k + (x < k ? -margin : margin);
  return x;
}

/// A random convolution layer `(c2, c0, k, k)` with He-like scale, optional bias.
template <typename Scalar>
netmorph::conv2d_weights<Scalar> random_conv(std::mt19937_64& rng, index_type c2, index_type c0,
                                             index_type k, index_type stride, index_type pad,
                                             bool bias = true) {
  return netmorph::conv2d_weights<Scalar>{
      randn<Scalar>({c2, c0, k, k}, rng, 1.0 / std::sqrt(double(c0 * k * k))),
      bias ? randn<Scalar>({c2}, rng) : tensor<Scalar>(), netmorph::conv2d_options{stride, pad}};
}

/// REQUIRE that calling `expr` throws `Error` and that the message contains `needle`.
#define NM_REQUIRE_THROWS_WITH(expr, Error, needle)                            \
  do {                                                                         \
    REQUIRE_THROWS_AS(expr, Error);                                            \
    REQUIRE_THROWS_WITH(expr, Catch::Matchers::Contains(std::string(needle))); \
  } while (0)

}  // namespace nmtest

#endif  // NETMORPH_TESTS_SUPPORT_HPP

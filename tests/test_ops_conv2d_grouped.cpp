// Grouped and depthwise convolutions (conv2d_options::groups, docs/DESIGN.md §2).
#include "support/test_support.hpp"

using netmorph::conv2d_options;
using netmorph::shape_error;
using netmorph::value_error;
using nmtest::draw;
using nmtest::idx;

namespace {

/// The ungrouped weight `(C_out, C_in, K_h, K_w)` that computes the same convolution as a grouped
/// one: output channel `o` of group `g` keeps its filter on input block `g` and zeros elsewhere.
template <typename Scalar>
netmorph::tensor<Scalar> block_diagonal(const netmorph::tensor<Scalar>& w, idx groups) {
  const idx co = w.dim(0), cig = w.dim(1), kh = w.dim(2), kw = w.dim(3), cog = co / groups;
  netmorph::tensor<Scalar> d({co, cig * groups, kh, kw});
  for (idx o = 0; o < co; ++o)
    for (idx i = 0; i < cig; ++i)
      for (idx y = 0; y < kh; ++y)
        for (idx x = 0; x < kw; ++x)
          d(o, o / cog * cig + i, y, x) = w(o, i, y, x);
  return d;
}

/// The grouped part of an ungrouped weight gradient (the inverse of `block_diagonal`).
template <typename Scalar>
netmorph::tensor<Scalar> diagonal_blocks(const netmorph::tensor<Scalar>& d, idx groups) {
  const idx co = d.dim(0), cig = d.dim(1) / groups, kh = d.dim(2), kw = d.dim(3), cog = co / groups;
  netmorph::tensor<Scalar> w({co, cig, kh, kw});
  for (idx o = 0; o < co; ++o)
    for (idx i = 0; i < cig; ++i)
      for (idx y = 0; y < kh; ++y)
        for (idx x = 0; x < kw; ++x)
          w(o, i, y, x) = d(o, o / cog * cig + i, y, x);
  return w;
}

}  // namespace

TEMPLATE_TEST_CASE(
    "grouped and depthwise conv2d equal the naive loop and the block-diagonal "
    "convolution, forward and both gradients",
    "[conv2d][groups][property]", float, double) {
  using T = netmorph::tensor<TestType>;
  const double tol = nmtest::exact_tolerance<TestType>();
  auto rng = nmtest::make_rng(40);
  for (int trial = 0; trial < 60; ++trial) {
    // A third of the trials are depthwise (one input channel per group, multiplier 1-3).
    const bool depthwise = trial % 3 == 0;
    const idx groups = draw(rng, 2, 5), cig = depthwise ? 1 : draw(rng, 1, 6),
              cog = draw(rng, 1, depthwise ? 3 : 4);
    const idx n = draw(rng, 1, 4), kh = draw(rng, 1, 5), kw = draw(rng, 1, 5),
              stride = draw(rng, 1, 2), pad = draw(rng, 0, 3);
    const idx h = draw(rng, std::max<idx>(1, kh - 2 * pad), 9),
              w = draw(rng, std::max<idx>(1, kw - 2 * pad), 9);
    const bool with_bias = trial % 4 != 1;
    const conv2d_options p{stride, pad, groups};
    CAPTURE(trial, groups, cig, cog, n, kh, kw, stride, pad, h, w, with_bias);
    const T x = nmtest::randn<TestType>({n, cig * groups, h, w}, rng);
    const T wt = nmtest::randn<TestType>({cog * groups, cig, kh, kw}, rng);
    const T b = with_bias ? nmtest::randn<TestType>({cog * groups}, rng) : T();
    const T dense = block_diagonal(wt, groups);

    const T y = netmorph::conv2d(x, wt, b, p);
    REQUIRE(relative_error(y, nmtest::naive_conv2d(x, wt, b, stride, pad, groups)) <= tol);
    REQUIRE(relative_error(y, nmtest::naive_conv2d(x, dense, b, stride, pad)) <= tol);

    const T dy = nmtest::randn<TestType>(y.shape(), rng);
    for (idx block : {idx(0), idx(2)}) {
      CAPTURE(block);
      netmorph::detail::conv2d_workspace<TestType> ws, dense_ws;
      T dw(wt.shape()), db({cog * groups}), dw_dense(dense.shape()), db_dense({cog * groups});
      netmorph::detail::conv2d_backward_weight(x, dy, kh, kw, p, dw.data(), db.data(), ws, block);
      netmorph::detail::conv2d_backward_weight(x, dy, kh, kw, conv2d_options{stride, pad},
                                               dw_dense.data(), db_dense.data(), dense_ws, block);
      REQUIRE(relative_error(dw, diagonal_blocks(dw_dense, groups)) <= tol);
      REQUIRE(relative_error(db, db_dense) <= tol);
      T dx, dx_dense;
      netmorph::detail::conv2d_backward_input(dy, wt, p, h, w, dx, ws, block);
      netmorph::detail::conv2d_backward_input(dy, dense, conv2d_options{stride, pad}, h, w,
                                              dx_dense, dense_ws, block);
      REQUIRE(dx.shape() == x.shape());
      REQUIRE(relative_error(dx, dx_dense) <= tol);
    }
  }
}

TEST_CASE("grouped conv2d's gradients agree with central finite differences", "[conv2d][groups]") {
  using T = netmorph::tensor<double>;
  auto rng = nmtest::make_rng(41);
  const idx groups = 3;
  const conv2d_options p{2, 1, groups};
  const T x = nmtest::randn<double>({2, 6, 5, 6}, rng);
  T wt = nmtest::randn<double>({9, 2, 3, 2}, rng);
  const T b = nmtest::randn<double>({9}, rng);
  const T dy = nmtest::randn<double>(netmorph::conv2d(x, wt, b, p).shape(), rng);
  // loss(w, x) = sum(dy * conv2d(x, w)); its gradients are the kernels' dW and dx.
  const auto loss = [&](const T& xx, const T& ww) {
    const T y = netmorph::conv2d(xx, ww, b, p);
    double s = 0;
    for (idx i = 0; i < y.size(); ++i)
      s += y.data()[i] * dy.data()[i];
    return s;
  };
  netmorph::detail::conv2d_workspace<double> ws;
  T dw(wt.shape()), db({9}), dx;
  netmorph::detail::conv2d_backward_weight(x, dy, 3, 2, p, dw.data(), db.data(), ws);
  netmorph::detail::conv2d_backward_input(dy, wt, p, 5, 6, dx, ws);
  // A central difference of a loss of size L is exact to about 1e-16 L / h + h^2 |f'''|: the
  // margin covers that rounding, the relative part the rest.
  const double h = 1e-6;
  for (idx i = 0; i < wt.size(); ++i) {
    T plus = wt, minus = wt;
    plus.data()[i] += h;
    minus.data()[i] -= h;
    CAPTURE(i);
    REQUIRE((loss(x, plus) - loss(x, minus)) / (2 * h) ==
            Approx(dw.data()[i]).epsilon(1e-6).margin(1e-7));
  }
  for (idx i = 0; i < x.size(); ++i) {
    T plus = x, minus = x;
    plus.data()[i] += h;
    minus.data()[i] -= h;
    CAPTURE(i);
    REQUIRE((loss(plus, wt) - loss(minus, wt)) / (2 * h) ==
            Approx(dx.data()[i]).epsilon(1e-6).margin(1e-7));
  }
}

TEST_CASE("grouped conv2d rejects groups that do not divide the channels, by name",
          "[conv2d][groups][error]") {
  using T = netmorph::tensor<double>;
  NM_REQUIRE_THROWS_WITH(
      netmorph::conv2d(T({1, 6, 4, 4}), T({4, 2, 3, 3}), conv2d_options{1, 0, 3}), shape_error,
      "conv2d: 4 output channels do not split into 3 groups");
  NM_REQUIRE_THROWS_WITH(
      netmorph::conv2d(T({1, 5, 4, 4}), T({6, 2, 3, 3}), conv2d_options{1, 0, 3}), shape_error,
      "conv2d: input has 5 channels, weight expects 2 per group x 3 groups = 6");
  NM_REQUIRE_THROWS_WITH(
      netmorph::conv2d(T({1, 6, 4, 4}), T({6, 2, 3, 3}), conv2d_options{1, 0, 0}), value_error,
      "conv2d: groups must be >= 1, got 0");
}

#include "support/test_support.hpp"

using netmorph::conv2d_params;
using netmorph::shape_error;
using netmorph::value_error;
using nmtest::draw;
using nmtest::idx;

TEMPLATE_TEST_CASE("conv2d equals the naive loop on random shapes, strides and paddings",
                   "[conv2d][property]", float, double) {
  auto rng = nmtest::make_rng(10);
  for (int trial = 0; trial < 60; ++trial) {
    const idx n = draw(rng, 1, 3), ci = draw(rng, 1, 5), co = draw(rng, 1, 6);
    const idx kh = draw(rng, 1, 5), kw = draw(rng, 1, 5), stride = draw(rng, 1, 3),
              pad = draw(rng, 0, 3);
    const idx h = draw(rng, std::max<idx>(1, kh - 2 * pad), 11),
              w = draw(rng, std::max<idx>(1, kw - 2 * pad), 11);
    const bool with_bias = trial % 3 != 0;
    CAPTURE(trial, n, ci, co, kh, kw, stride, pad, h, w, with_bias);
    auto x = nmtest::randn<TestType>({n, ci, h, w}, rng);
    auto wt = nmtest::randn<TestType>({co, ci, kh, kw}, rng);
    auto b = with_bias ? nmtest::randn<TestType>({co}, rng) : netmorph::tensor<TestType>();
    auto y = netmorph::conv2d(x, wt, b, conv2d_params{stride, pad});
    auto ref = nmtest::naive_conv2d(x, wt, b, stride, pad);
    REQUIRE(y.shape() == ref.shape());
    REQUIRE(netmorph::relative_error(y, ref) <= nmtest::exact_tolerance<TestType>());
  }
}

TEMPLATE_TEST_CASE("conv2d with a centred delta and 'same' padding is the identity", "[conv2d]",
                   float, double) {
  auto rng = nmtest::make_rng(11);
  auto x = nmtest::randn<TestType>({2, 3, 7, 6}, rng);
  for (idx k : {1, 3, 5}) {
    auto y =
        netmorph::conv2d(x, netmorph::identity_filter<TestType>(3, k), conv2d_params{1, k / 2});
    REQUIRE(y == x);
  }
}

TEMPLATE_TEST_CASE("conv2d layer overload uses the layer's stride, padding and bias", "[conv2d]",
                   float, double) {
  auto rng = nmtest::make_rng(12);
  netmorph::conv2d_layer<TestType> layer{nmtest::randn<TestType>({4, 2, 3, 3}, rng),
                                         nmtest::randn<TestType>({4}, rng), conv2d_params{2, 1}};
  auto x = nmtest::randn<TestType>({1, 2, 9, 9}, rng);
  REQUIRE(netmorph::conv2d(x, layer) ==
          netmorph::conv2d(x, layer.weight, layer.bias, layer.params));
  REQUIRE(netmorph::conv2d(x, layer).shape() == netmorph::shape_type{1, 4, 5, 5});
  auto nb = netmorph::conv2d(x, layer.weight, layer.params);
  REQUIRE(netmorph::relative_error(
              nb, nmtest::naive_conv2d(x, layer.weight, netmorph::tensor<TestType>(), 2, 1)) <=
          nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("conv2d rejects bad operands with named messages", "[conv2d][error]", float,
                   double) {
  using T = netmorph::tensor<TestType>;
  T x({1, 3, 5, 5}), w({2, 4, 3, 3}), w3({2, 3, 3, 3});
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, w), shape_error,
                         "conv2d: input has 3 channels, weight expects 4");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(T({3, 5, 5}), w3), shape_error,
                         "conv2d: input must be NCHW (rank 4), got shape (3, 5, 5)");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, T({2, 3, 3})), shape_error,
                         "conv2d: weight must be OIHW (rank 4), got shape (2, 3, 3)");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, w3, T({3})), shape_error,
                         "conv2d: bias must have shape (2), got (3)");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, w3, conv2d_params{0, 0}), value_error,
                         "conv2d: stride must be >= 1, got 0");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, w3, conv2d_params{1, -1}), value_error,
                         "conv2d: padding must be >= 0, got -1");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, T({2, 3, 7, 7})), shape_error,
                         "conv2d: kernel extent 7 does not fit input extent 5 with padding 0");
  NM_REQUIRE_THROWS_WITH(netmorph::conv2d(x, T({2, 3, 0, 3})), shape_error,
                         "conv2d: empty kernel (2, 3, 0, 3)");
}

TEMPLATE_TEST_CASE("conv2d of an empty batch is an empty batch", "[conv2d]", float, double) {
  using T = netmorph::tensor<TestType>;
  auto y = netmorph::conv2d(T({0, 2, 4, 4}), T({3, 2, 3, 3}), conv2d_params{1, 1});
  REQUIRE(y.shape() == netmorph::shape_type{0, 3, 4, 4});
}

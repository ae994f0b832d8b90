#include "support/test_support.hpp"

using netmorph::conv2d_options;
using netmorph::shape_error;
using netmorph::value_error;
using nmtest::draw;
using nmtest::idx;

TEMPLATE_TEST_CASE("compose equals the naive eq. 6 loop on random shapes", "[compose][property]",
                   float, double) {
  auto rng = nmtest::make_rng(30);
  for (int trial = 0; trial < 50; ++trial) {
    const idx c0 = draw(rng, 1, 6), c1 = draw(rng, 1, 6), c2 = draw(rng, 1, 6);
    const idx k1h = draw(rng, 1, 5), k1w = draw(rng, 1, 5), k2h = draw(rng, 1, 4),
              k2w = draw(rng, 1, 4);
    CAPTURE(trial, c0, c1, c2, k1h, k1w, k2h, k2w);
    auto f1 = nmtest::randn<TestType>({c1, c0, k1h, k1w}, rng);
    auto f2 = nmtest::randn<TestType>({c2, c1, k2h, k2w}, rng);
    auto g = netmorph::compose(f2, f1);
    REQUIRE(g.shape() == netmorph::shape_type{c2, c0, k1h + k2h - 1, k1w + k2w - 1});
    REQUIRE(netmorph::relative_error(g, nmtest::naive_compose(f2, f1)) <=
            nmtest::exact_tolerance<TestType>());
    // Transposing the channels of a composition swaps the factors (used by the depth solver).
    auto gt = netmorph::compose(netmorph::transpose_channels(f1), netmorph::transpose_channels(f2));
    REQUIRE(netmorph::relative_error(gt, netmorph::transpose_channels(g)) <=
            nmtest::exact_tolerance<TestType>());
  }
}

// Depth morphing's key identity (docs/DESIGN.md §3.6): two stacked convolutions, the first with the
// parent's padding grown by (K~-K)/2 and the second unpadded, equal one convolution with the
// composed filter at every pixel, borders included, with biases and strides.
TEMPLATE_TEST_CASE("stacked convolutions equal the composed convolution at every border pixel",
                   "[compose][property]", float, double) {
  auto rng = nmtest::make_rng(31);
  for (int trial = 0; trial < 80; ++trial) {
    const idx c0 = draw(rng, 1, 4), c1 = draw(rng, 1, 5), c2 = draw(rng, 1, 4);
    const idx k1 = draw(rng, 1, 5), k2 = draw(rng, 1, 5), pad = draw(rng, 0, 3),
              stride = draw(rng, 1, 3);
    const idx kt = k1 + k2 - 1;
    const idx h = draw(rng, std::max<idx>(1, kt - 2 * pad), 10),
              w = draw(rng, std::max<idx>(1, kt - 2 * pad), 10), n = draw(rng, 1, 3);
    CAPTURE(trial, c0, c1, c2, k1, k2, pad, stride, h, w, n);
    auto x = nmtest::randn<TestType>({n, c0, h, w}, rng);
    auto f1 = nmtest::randn<TestType>({c1, c0, k1, k1}, rng);
    auto f2 = nmtest::randn<TestType>({c2, c1, k2, k2}, rng);
    auto b1 = nmtest::randn<TestType>({c1}, rng);
    auto b2 = nmtest::randn<TestType>({c2}, rng);
    // The stride goes on the second layer (or on the first when K2 = 1).
    const conv2d_options p1{k2 == 1 ? stride : 1, pad}, p2{k2 == 1 ? 1 : stride, 0};
    auto stacked = netmorph::conv2d(netmorph::conv2d(x, f1, b1, p1), f2, b2, p2);
    auto direct = netmorph::conv2d(x, netmorph::compose(f2, f1), netmorph::compose_bias(f2, b1, b2),
                                   conv2d_options{stride, pad});
    REQUIRE(stacked.shape() == direct.shape());
    REQUIRE(netmorph::relative_error(stacked, direct) <= nmtest::exact_tolerance<TestType>());
  }
}

TEMPLATE_TEST_CASE("'same' paddings on both stacked layers are not exact at the border",
                   "[compose]", double) {
  auto rng = nmtest::make_rng(32);
  auto x = nmtest::randn<TestType>({1, 2, 8, 8}, rng);
  auto f1 = nmtest::randn<TestType>({3, 2, 3, 3}, rng);
  auto f2 = nmtest::randn<TestType>({2, 3, 3, 3}, rng);
  auto stacked =
      netmorph::conv2d(netmorph::conv2d(x, f1, conv2d_options{1, 1}), f2, conv2d_options{1, 1});
  auto direct = netmorph::conv2d(x, netmorph::compose(f2, f1), conv2d_options{1, 2});
  REQUIRE(stacked.shape() == direct.shape());
  REQUIRE(netmorph::relative_error(stacked, direct) > 1e-3);
  // ... while the interior (away from the 1-pixel re-padded ring) agrees.
  for (idx o = 0; o < 2; ++o)
    for (idx y = 2; y < 6; ++y)
      for (idx xx = 2; xx < 6; ++xx)
        REQUIRE(stacked(0, o, y, xx) == Approx(direct(0, o, y, xx)).epsilon(1e-10).margin(1e-12));
}

TEMPLATE_TEST_CASE("compose_bias adds F2 applied to b1", "[compose]", float, double) {
  auto rng = nmtest::make_rng(33);
  auto f2 = nmtest::randn<TestType>({3, 2, 3, 3}, rng);
  auto b1 = nmtest::randn<TestType>({2}, rng);
  auto b2 = nmtest::randn<TestType>({3}, rng);
  auto b = netmorph::compose_bias(f2, b1, b2);
  for (idx o = 0; o < 3; ++o) {
    double ref = b2(o);
    for (idx c = 0; c < 2; ++c)
      for (idx y = 0; y < 3; ++y)
        for (idx x = 0; x < 3; ++x)
          ref += double(f2(o, c, y, x)) * double(b1(c));
    REQUIRE(b(o) == Approx(ref).epsilon(nmtest::exact_tolerance<TestType>()));
  }
  using T = netmorph::tensor<TestType>;
  REQUIRE(netmorph::compose_bias(f2, T(), T()).empty());
  REQUIRE(netmorph::compose_bias(f2, T(), b2) == b2);
  NM_REQUIRE_THROWS_WITH(netmorph::compose_bias(f2, T({3}), b2), shape_error,
                         "compose_bias: b1 must have shape (2), got (3)");
  NM_REQUIRE_THROWS_WITH(netmorph::compose_bias(f2, b1, T({2})), shape_error,
                         "compose_bias: b2 must have shape (3), got (2)");
}

TEMPLATE_TEST_CASE("pad_kernel and crop_kernel are centred inverses", "[compose]", float, double) {
  auto rng = nmtest::make_rng(34);
  auto f = nmtest::randn<TestType>({2, 3, 3, 1}, rng);
  auto p = netmorph::pad_kernel(f, 7, 5);
  REQUIRE(p.shape() == netmorph::shape_type{2, 3, 7, 5});
  REQUIRE(p(1, 2, 3, 2) == f(1, 2, 1, 0));
  REQUIRE(p(1, 2, 0, 0) == TestType(0));
  REQUIRE(netmorph::crop_kernel(p, 3, 1) == f);
  // A centred padding keeps a "same" convolution's output unchanged.
  auto x = nmtest::randn<TestType>({1, 3, 6, 6}, rng);
  auto g = nmtest::randn<TestType>({2, 3, 3, 3}, rng);
  REQUIRE(netmorph::relative_error(
              netmorph::conv2d(x, netmorph::pad_kernel(g, 5, 5), conv2d_options{1, 2}),
              netmorph::conv2d(x, g, conv2d_options{1, 1})) <= nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("kernel and filter helpers reject bad sizes with named messages",
                   "[compose][error]", float, double) {
  using T = netmorph::tensor<TestType>;
  T f({2, 3, 3, 3});
  NM_REQUIRE_THROWS_WITH(netmorph::pad_kernel(f, 1, 3), value_error,
                         "pad_kernel: cannot pad a 3x3 kernel to the smaller 1x3");
  NM_REQUIRE_THROWS_WITH(netmorph::pad_kernel(f, 4, 4), value_error,
                         "pad_kernel: growth from 3x3 to 4x4 is odd");
  NM_REQUIRE_THROWS_WITH(netmorph::crop_kernel(f, 5, 3), value_error,
                         "crop_kernel: cannot crop a 3x3 kernel to 5x3");
  NM_REQUIRE_THROWS_WITH(netmorph::crop_kernel(f, 2, 2), value_error,
                         "crop_kernel: shrink from 3x3 to 2x2 is odd");
  NM_REQUIRE_THROWS_WITH(netmorph::compose(T({2, 4, 1, 1}), f), shape_error,
                         "compose: F2 expects 4 input channels, F1 has 2 output channels");
  NM_REQUIRE_THROWS_WITH(netmorph::compose(T({2, 2, 1}), f), shape_error,
                         "compose: F2 must be OIHW (rank 4), got shape (2, 2, 1)");
  NM_REQUIRE_THROWS_WITH(netmorph::transpose_channels(T({2})), shape_error,
                         "transpose_channels: filter must be OIHW");
  NM_REQUIRE_THROWS_WITH(netmorph::identity_filter<TestType>(3, 2), value_error,
                         "identity_filter: kernel size must be odd and positive, got 2");
  NM_REQUIRE_THROWS_WITH(netmorph::identity_filter<TestType>(0, 3), value_error,
                         "identity_filter: channels must be >= 1, got 0");
}

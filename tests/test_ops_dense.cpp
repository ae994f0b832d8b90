#include "support/test_support.hpp"

using netmorph::shape_error;
using nmtest::draw;
using nmtest::idx;

TEMPLATE_TEST_CASE("dense equals the naive loop on random shapes", "[dense][property]", float,
                   double) {
  auto rng = nmtest::make_rng(20);
  for (int trial = 0; trial < 40; ++trial) {
    const idx n = draw(rng, 1, 9), in = draw(rng, 1, 40), out = draw(rng, 1, 30);
    const bool with_bias = trial % 2 == 0;
    CAPTURE(trial, n, in, out, with_bias);
    auto x = nmtest::randn<TestType>({n, in}, rng);
    auto w = nmtest::randn<TestType>({out, in}, rng);
    auto b = with_bias ? nmtest::randn<TestType>({out}, rng) : netmorph::tensor<TestType>();
    auto y = netmorph::dense(x, w, b);
    netmorph::tensor<TestType> ref({n, out});
    for (idx s = 0; s < n; ++s)
      for (idx o = 0; o < out; ++o) {
        double acc = with_bias ? double(b(o)) : 0.0;
        for (idx i = 0; i < in; ++i)
          acc += double(w(o, i)) * double(x(s, i));
        ref(s, o) = static_cast<TestType>(acc);
      }
    REQUIRE(netmorph::relative_error(y, ref) <= nmtest::exact_tolerance<TestType>());
    // A dense layer is a 1x1 convolution on a 1x1 blob (docs/DESIGN.md §2).
    auto yc = netmorph::conv2d(x.reshape({n, in, 1, 1}), w.reshape({out, in, 1, 1}), b);
    REQUIRE(netmorph::relative_error(yc.reshape({n, out}), ref) <=
            nmtest::exact_tolerance<TestType>());
    netmorph::dense_weights<TestType> layer{w, b};
    REQUIRE(netmorph::dense(x, layer) == y);
  }
}

TEMPLATE_TEST_CASE("dense rejects bad operands with named messages", "[dense][error]", float,
                   double) {
  using T = netmorph::tensor<TestType>;
  NM_REQUIRE_THROWS_WITH(netmorph::dense(T({2, 5}), T({3, 4})), shape_error,
                         "dense: input has 5 features, weight expects 4");
  NM_REQUIRE_THROWS_WITH(netmorph::dense(T({2, 5, 1}), T({3, 5})), shape_error,
                         "dense: input must be (N, features), got shape (2, 5, 1)");
  NM_REQUIRE_THROWS_WITH(netmorph::dense(T({2, 5}), T({3, 5, 1})), shape_error,
                         "dense: weight must be (out, in), got shape (3, 5, 1)");
  NM_REQUIRE_THROWS_WITH(netmorph::dense(T({2, 5}), T({3, 5}), T({4})), shape_error,
                         "dense: bias must have shape (3), got (4)");
}

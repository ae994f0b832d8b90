#include "support/test_support.hpp"

#include <cmath>
#include <string>
#include <vector>

using netmorph::activation_fn;
using netmorph::activation_kind;

TEST_CASE("activations have their textbook values", "[activations]") {
  REQUIRE(activation_fn{activation_kind::relu}.value(-2.0) == 0.0);
  REQUIRE(activation_fn{activation_kind::leaky_relu, 0.1}.value(-2.0) == Approx(-0.2));
  REQUIRE(activation_fn{activation_kind::tanh}.value(0.5) == Approx(std::tanh(0.5)));
  REQUIRE(activation_fn{activation_kind::sigmoid}.value(0.0) == Approx(0.5));
  REQUIRE(activation_fn{activation_kind::elu, 1.0}.value(-1.0) == Approx(std::exp(-1.0) - 1.0));
  REQUIRE(activation_fn{activation_kind::softplus}.value(0.0) == Approx(std::log(2.0)));
  REQUIRE(activation_fn{activation_kind::softplus}.value(800.0) == Approx(800.0));
  REQUIRE(activation_fn{activation_kind::softplus}.value(-800.0) >= 0.0);
  REQUIRE(activation_fn{activation_kind::gelu}.value(1.0) == Approx(0.8413447460685429));
  REQUIRE(activation_fn{activation_kind::gelu}.zero_at_zero());
  REQUIRE_FALSE(activation_fn{activation_kind::sigmoid}.zero_at_zero());
  REQUIRE_FALSE(activation_fn{activation_kind::softplus}.zero_at_zero());
}

TEST_CASE("P-activations are the identity at a = 1 and phi at a = 0", "[activations]") {
  auto rng = nmtest::make_rng(60);
  std::normal_distribution<double> normal(0.0, 2.0);
  for (activation_kind k : nmtest::all_activation_kinds()) {
    CAPTURE(netmorph::to_string(k));
    const auto p1 = netmorph::make_p_activation(activation_fn{k, 0.2}, 1.0);
    const auto p0 = netmorph::make_p_activation(activation_fn{k, 0.2}, 0.0);
    for (int i = 0; i < 50; ++i) {
      const double x = normal(rng);
      REQUIRE(p1.value(x) == x);
      REQUIRE(p0.value(x) == Approx(p0.phi.value(x)));
    }
  }
}

TEST_CASE("P-activation derivatives in x and a match central finite differences",
          "[activations][property]") {
  auto rng = nmtest::make_rng(61);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (activation_kind k : nmtest::all_activation_kinds()) {
    for (int i = 0; i < 100; ++i) {
      double x = normal(rng);
      if (std::abs(x) < 1e-3) x += 0.01;  // away from the kinks of ReLU-type functions
      const double a = unit(rng);
      CAPTURE(netmorph::to_string(k), x, a);
      const auto p = netmorph::make_p_activation(activation_fn{k, 0.3}, a);
      const double h = 1e-6;
      const double fdx = (p.value(x + h) - p.value(x - h)) / (2 * h);
      REQUIRE(p.dx(x) == Approx(fdx).epsilon(1e-6).margin(1e-8));
      const double ah = std::min({h, a, 1 - a}) > 0 ? std::min({h, a, 1 - a}) : 0.0;
      if (ah > 1e-9) {
        const auto pp = netmorph::make_p_activation(p.phi, a + ah);
        const auto pm = netmorph::make_p_activation(p.phi, a - ah);
        const double fda = (pp.value(x) - pm.value(x)) / (2 * ah);
        REQUIRE(p.da(x) == Approx(fda).epsilon(1e-6).margin(1e-8));
      }
    }
  }
}

TEMPLATE_TEST_CASE("apply maps an activation over a tensor", "[activations]", float, double) {
  netmorph::tensor<TestType> t({3}, std::vector<TestType>{-1, 0, 2});
  auto r = netmorph::apply(activation_fn{activation_kind::relu}, t);
  REQUIRE(r == netmorph::tensor<TestType>({3}, std::vector<TestType>{0, 0, 2}));
}

TEST_CASE("make_p_activation rejects a outside [0, 1]", "[activations][error]") {
  NM_REQUIRE_THROWS_WITH(netmorph::make_p_activation(activation_fn{activation_kind::tanh}, 1.5),
                         netmorph::value_error,
                         "make_p_activation: a must be in [0, 1], got 1.5 (for tanh)");
  NM_REQUIRE_THROWS_WITH(netmorph::make_p_activation(activation_fn{activation_kind::relu}, -0.1),
                         netmorph::value_error, "got -0.1 (for relu)");
  NM_REQUIRE_THROWS_WITH(
      netmorph::make_p_activation(activation_fn{activation_kind::relu}, std::nan("")),
      netmorph::value_error, "make_p_activation: a must be in [0, 1]");
}

TEST_CASE("every activation kind has its own name, function and derivative", "[activations]") {
  // The switches over activation_kind have no default branch, so -Wswitch (an error in the
  // project's builds) names a kind a switch forgets; this checks that no two kinds share a branch.
  using netmorph::activation_fn;
  using netmorph::activation_kind;
  const std::vector<activation_kind> kinds = {activation_kind::identity,   activation_kind::relu,
                                              activation_kind::leaky_relu, activation_kind::tanh,
                                              activation_kind::sigmoid,    activation_kind::elu,
                                              activation_kind::softplus,   activation_kind::gelu};
  for (std::size_t i = 0; i < kinds.size(); ++i)
    for (std::size_t j = i + 1; j < kinds.size(); ++j) {
      const activation_fn a{kinds[i], 0.3}, b{kinds[j], 0.3};
      CAPTURE(netmorph::to_string(kinds[i]), netmorph::to_string(kinds[j]));
      REQUIRE(std::string(netmorph::to_string(kinds[i])) != netmorph::to_string(kinds[j]));
      bool differ = false;
      for (const double x : {-1.5, -0.5, 0.5, 2.0})
        differ = differ || a.value(x) != b.value(x) || a.derivative(x) != b.derivative(x);
      REQUIRE(differ);
    }
  REQUIRE(activation_fn{activation_kind::elu, 1.0}.has_param());
  REQUIRE(activation_fn{activation_kind::leaky_relu}.has_param());
  REQUIRE_FALSE(activation_fn{activation_kind::gelu}.has_param());
}

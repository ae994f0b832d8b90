#include "support/test_support.hpp"

#include <cmath>
#include <string>
#include <utility>
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
  REQUIRE(activation_fn{activation_kind::relu6}.value(7.5) == 6.0);
  REQUIRE(activation_fn{activation_kind::hardswish}.value(1.5) == Approx(1.125));
  REQUIRE(activation_fn{activation_kind::hardsigmoid}.value(1.5) == Approx(0.75));
  REQUIRE(activation_fn{activation_kind::silu}.value(1.0) == Approx(1.0 / (1.0 + std::exp(-1.0))));
  REQUIRE(activation_fn{activation_kind::relu6}.zero_at_zero());
  REQUIRE(activation_fn{activation_kind::hardswish}.zero_at_zero());
  REQUIRE(activation_fn{activation_kind::silu}.zero_at_zero());
  REQUIRE_FALSE(activation_fn{activation_kind::hardsigmoid}.zero_at_zero());
}

namespace {

/// phi(x) and phi'(x) of PyTorch 1.13 in float64 (`F.relu6`, `F.hardswish`, `F.hardsigmoid`,
/// `F.silu` and autograd, on a 64-element tensor), at the kinks -3, 0, 3, 6 and at large |x|.
struct torch_point {
  double x, value, derivative;
};

const std::vector<std::pair<activation_kind, std::vector<torch_point>>>& torch_values() {
  // hardsigmoid's slope is 1/6: torch's kernel multiplies by float(1/6) = 0.1666666716337204.
  static const double sixth = 1.0 / 6.0;
  static const std::vector<std::pair<activation_kind, std::vector<torch_point>>> table{
      {activation_kind::relu6,
       {{-800.0, 0.0, 0.0},
        {-40.0, 0.0, 0.0},
        {-6.0, 0.0, 0.0},
        {-3.0, 0.0, 0.0},
        {-1.5, 0.0, 0.0},
        {-0.5, 0.0, 0.0},
        {0.0, 0.0, 0.0},
        {0.5, 0.5, 1.0},
        {1.5, 1.5, 1.0},
        {3.0, 3.0, 1.0},
        {4.5, 4.5, 1.0},
        {6.0, 6.0, 0.0},
        {7.0, 6.0, 0.0},
        {40.0, 6.0, 0.0},
        {800.0, 6.0, 0.0}}},
      {activation_kind::hardswish,
       {{-800.0, -0.0, 0.0},
        {-40.0, -0.0, 0.0},
        {-6.0, -0.0, 0.0},
        {-3.0, -0.0, -0.5},
        {-1.5, -0.375, 0.0},
        {-0.5, -0.20833333333333334, 0.33333333333333337},
        {0.0, 0.0, 0.5},
        {0.5, 0.2916666666666667, 0.6666666666666666},
        {1.5, 1.125, 1.0},
        {3.0, 3.0, 1.0},
        {4.5, 4.5, 1.0},
        {6.0, 6.0, 1.0},
        {7.0, 7.0, 1.0},
        {40.0, 40.0, 1.0},
        {800.0, 800.0, 1.0}}},
      {activation_kind::hardsigmoid,
       {{-800.0, 0.0, 0.0},
        {-40.0, 0.0, 0.0},
        {-6.0, 0.0, 0.0},
        {-3.0, 0.0, 0.0},
        {-1.5, 0.25, sixth},
        {-0.5, 0.4166666666666667, sixth},
        {0.0, 0.5, sixth},
        {0.5, 0.5833333333333334, sixth},
        {1.5, 0.75, sixth},
        {3.0, 1.0, 0.0},
        {4.5, 1.0, 0.0},
        {6.0, 1.0, 0.0},
        {7.0, 1.0, 0.0},
        {40.0, 1.0, 0.0},
        {800.0, 1.0, 0.0}}},
      {activation_kind::silu,
       {{-800.0, -0.0, -0.0},
        {-40.0, -1.6993417021166355e-16, -1.6568581595637197e-16},
        {-6.0, -0.014835738939808647, -0.012326432591525513},
        {-3.0, -0.14227761953270035, -0.08810410601516962},
        {-1.5, -0.2736382857095345, -0.041294154299142946},
        {-0.5, -0.1887703343990727, 0.2600388126973482},
        {0.0, 0.0, 0.5},
        {0.5, 0.3112296656009273, 0.7399611873026519},
        {1.5, 1.2263617142904655, 1.041294154299143},
        {3.0, 2.8577223804672998, 1.0881041060151693},
        {4.5, 4.450558758162331, 1.0379110911194203},
        {6.0, 5.985164261060192, 1.0123264325915249},
        {7.0, 6.993622641639196, 1.0054604970664518},
        {40.0, 40.0, 1.0},
        {800.0, 800.0, 1.0}}}};
  return table;
}

/// Independent formulas (written piecewise, not with clamps; SiLU in long double from `exp` on
/// the side where it does not overflow). No switch: these cover four kinds, not all.
double reference_value(activation_kind k, double x) {
  const long double xl = x;
  if (k == activation_kind::relu6) return x <= 0 ? 0.0 : x >= 6 ? 6.0 : x;
  if (k == activation_kind::hardswish)
    return x <= -3 ? 0.0 : x >= 3 ? x : double(xl * (xl + 3) / 6);
  if (k == activation_kind::hardsigmoid) return x <= -3 ? 0.0 : x >= 3 ? 1.0 : double((xl + 3) / 6);
  REQUIRE(k == activation_kind::silu);
  return x < 0 ? double(xl * std::exp(xl) / (1 + std::exp(xl))) : double(xl / (1 + std::exp(-xl)));
}

/// Their derivatives, with PyTorch's values at the kinks: relu6 0 at 0 and 6, hardsigmoid 0 at
/// -3 and 3, hardswish -1/2 at -3 and 1 at 3.
double reference_derivative(activation_kind k, double x) {
  const long double xl = x;
  if (k == activation_kind::relu6) return x > 0 && x < 6 ? 1.0 : 0.0;
  if (k == activation_kind::hardswish)
    return x < -3 ? 0.0 : x >= 3 ? 1.0 : double((2 * xl + 3) / 6);
  if (k == activation_kind::hardsigmoid) return x > -3 && x < 3 ? 1.0 / 6.0 : 0.0;
  REQUIRE(k == activation_kind::silu);
  const long double e = std::exp(-std::abs(xl));  // in (0, 1]: no overflow
  const long double s = x < 0 ? e / (1 + e) : 1 / (1 + e),
                    one_minus_s = x < 0 ? 1 / (1 + e) : e / (1 + e);
  return double(s + xl * s * one_minus_s);
}

const std::vector<activation_kind> pytorch_kinds = {
    activation_kind::relu6, activation_kind::hardswish, activation_kind::hardsigmoid,
    activation_kind::silu};

}  // namespace

TEST_CASE("relu6, hardswish, hardsigmoid and silu give PyTorch's values and gradients",
          "[activations]") {
  // torch 1.13's own numbers, kinks included: netmorph's derivative at a kink is the value
  // PyTorch's autograd gives there.
  for (const auto& [kind, points] : torch_values())
    for (const torch_point& p : points) {
      const activation_fn phi{kind};
      CAPTURE(netmorph::to_string(kind), p.x);
      REQUIRE(phi.value(p.x) == Approx(p.value).epsilon(nmtest::reorder_tolerance()));
      REQUIRE(phi.derivative(p.x) == Approx(p.derivative).epsilon(nmtest::reorder_tolerance()));
    }
}

TEST_CASE("relu6, hardswish, hardsigmoid and silu match independent formulas on a grid",
          "[activations]") {
  // Every quarter in [-10, 10] (the kinks -3, 0, 3, 6 among them), the kinks' neighbours one
  // ulp away, and large |x|, where nothing may become NaN or infinite.
  std::vector<double> grid;
  for (int i = -40; i <= 40; ++i)
    grid.push_back(i / 4.0);
  for (const double k : nmtest::activation_kinks) {
    grid.push_back(std::nextafter(k, -1e300));
    grid.push_back(std::nextafter(k, 1e300));
  }
  for (const double x : {-800.0, -700.0, -40.0, 40.0, 700.0, 800.0})
    grid.push_back(x);
  for (const activation_kind kind : pytorch_kinds)
    for (const double x : grid) {
      const activation_fn phi{kind};
      CAPTURE(netmorph::to_string(kind), x);
      REQUIRE(phi.value(x) ==
              Approx(reference_value(kind, x)).epsilon(nmtest::reorder_tolerance()));
      REQUIRE(phi.derivative(x) ==
              Approx(reference_derivative(kind, x)).epsilon(nmtest::reorder_tolerance()));
    }
  // The value at the kinks themselves, exactly.
  const activation_fn relu6{activation_kind::relu6}, hswish{activation_kind::hardswish},
      hsig{activation_kind::hardsigmoid};
  REQUIRE(relu6.value(6.0) == 6.0);
  REQUIRE(relu6.value(0.0) == 0.0);
  REQUIRE(hswish.value(-3.0) == 0.0);
  REQUIRE(hswish.value(3.0) == 3.0);
  REQUIRE(hsig.value(-3.0) == 0.0);
  REQUIRE(hsig.value(3.0) == 1.0);
  REQUIRE(hsig.value(0.0) == 0.5);
}

TEST_CASE("every activation is finite at large |x|", "[activations]") {
  for (const activation_kind kind : netmorph::activation_kinds)
    for (const double x : {-800.0, -1e10, 800.0, 1e10}) {
      const activation_fn phi{kind};
      CAPTURE(netmorph::to_string(kind), x);
      REQUIRE(std::isfinite(phi.value(x)));
      REQUIRE(std::isfinite(phi.derivative(x)));
      const auto p = netmorph::make_p_activation(phi, 0.5);
      REQUIRE(std::isfinite(p.value(x)));
      REQUIRE(std::isfinite(p.dx(x)));
      REQUIRE(std::isfinite(p.da(x)));
    }
}

TEST_CASE("every activation's derivative matches central finite differences away from kinks",
          "[activations][property]") {
  auto rng = nmtest::make_rng(62);
  std::normal_distribution<double> normal(0.0, 4.0);
  std::vector<double> xs;
  for (const double k : nmtest::activation_kinks)  // beside the kinks, on both sides
    for (const double d : {-0.01, 0.01})
      xs.push_back(k + d);
  for (int i = 0; i < 200; ++i)
    xs.push_back(nmtest::away_from_kinks(normal(rng)));
  for (const activation_kind kind : netmorph::activation_kinds)
    for (const double x : xs) {
      const activation_fn phi{kind, 0.3};
      CAPTURE(netmorph::to_string(kind), x);
      const double h = 1e-6;
      const double fd = (phi.value(x + h) - phi.value(x - h)) / (2 * h);
      REQUIRE(phi.derivative(x) == Approx(fd).epsilon(1e-6).margin(1e-8));
    }
}

TEST_CASE("P-activations are the identity at a = 1 and phi at a = 0", "[activations]") {
  auto rng = nmtest::make_rng(60);
  std::normal_distribution<double> normal(0.0, 2.0);
  for (activation_kind k : nmtest::all_activation_kinds()) {
    CAPTURE(netmorph::to_string(k));
    const auto p1 = netmorph::make_p_activation(activation_fn{k, 0.2}, 1.0);
    const auto p0 = netmorph::make_p_activation(activation_fn{k, 0.2}, 0.0);
    std::vector<double> xs = {-800.0, -6.0, -3.0, 0.0, 3.0, 6.0, 800.0};  // kinks, large |x|
    for (int i = 0; i < 50; ++i)
      xs.push_back(normal(rng));
    for (const double x : xs) {
      CAPTURE(x);
      REQUIRE(p1.value(x) == x);
      REQUIRE(p1.dx(x) == 1.0);
      REQUIRE(p0.value(x) == Approx(p0.phi.value(x)));
      REQUIRE(p0.dx(x) == Approx(p0.phi.derivative(x)));
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
      const double x = nmtest::away_from_kinks(normal(rng));
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
  // activations.hpp's static_assert proves netmorph::activation_kinds holds every kind.
  const auto& kinds = netmorph::activation_kinds;
  for (std::size_t i = 0; i < kinds.size(); ++i)
    for (std::size_t j = i + 1; j < kinds.size(); ++j) {
      const activation_fn a{kinds[i], 0.3}, b{kinds[j], 0.3};
      CAPTURE(netmorph::to_string(kinds[i]), netmorph::to_string(kinds[j]));
      REQUIRE(std::string(netmorph::to_string(kinds[i])) != netmorph::to_string(kinds[j]));
      bool differ = false;  // 7 tells relu6 from relu; -4 and 4 the hard functions' flat parts
      for (const double x : {-4.0, -1.5, -0.5, 0.5, 2.0, 4.0, 7.0})
        differ = differ || a.value(x) != b.value(x) || a.derivative(x) != b.derivative(x);
      REQUIRE(differ);
    }
  for (const activation_kind k : kinds) {
    CAPTURE(netmorph::to_string(k));
    REQUIRE(std::string(netmorph::to_string(k)) != "unknown");
    REQUIRE(activation_fn{k}.has_param() ==
            (k == activation_kind::leaky_relu || k == activation_kind::elu));
  }
  REQUIRE(activation_fn{activation_kind::elu, 1.0}.has_param());
  REQUIRE(activation_fn{activation_kind::leaky_relu}.has_param());
  REQUIRE_FALSE(activation_fn{activation_kind::gelu}.has_param());
}

TEST_CASE("activation names parse back to their kinds, and nothing else does", "[activations]") {
  for (const activation_kind k : netmorph::activation_kinds) {
    CAPTURE(netmorph::to_string(k));
    REQUIRE(netmorph::activation_kind_from_string(netmorph::to_string(k)) == k);
  }
  REQUIRE(netmorph::to_string(activation_kind::relu6) == std::string("relu6"));
  REQUIRE(netmorph::to_string(activation_kind::hardswish) == std::string("hardswish"));
  REQUIRE(netmorph::to_string(activation_kind::hardsigmoid) == std::string("hardsigmoid"));
  REQUIRE(netmorph::to_string(activation_kind::silu) == std::string("silu"));
  for (const char* bad : {"", "Relu", "relu ", "hard_swish", "swish", "elu(1)", "unknown"}) {
    CAPTURE(bad);
    REQUIRE_FALSE(netmorph::activation_kind_from_string(bad).has_value());
  }
  REQUIRE(netmorph::activation_kind_names() ==
          "identity, relu, leaky_relu, tanh, sigmoid, elu, softplus, gelu, relu6, hardswish, "
          "hardsigmoid, silu");
  REQUIRE(netmorph::activation_kind_names("|") ==
          "identity|relu|leaky_relu|tanh|sigmoid|elu|softplus|gelu|relu6|hardswish|"
          "hardsigmoid|silu");
}

TEST_CASE("an activation without a parameter gets PyTorch's default", "[activations]") {
  // nn.LeakyReLU's negative_slope is 0.01 and nn.ELU's alpha 1, here as in netmorph-morph.
  REQUIRE(netmorph::default_param(activation_kind::leaky_relu) == 0.01);
  REQUIRE(netmorph::default_param(activation_kind::elu) == 1.0);
  REQUIRE(activation_fn{activation_kind::leaky_relu}.param == 0.01);
  REQUIRE(activation_fn{activation_kind::elu}.param == 1.0);
  REQUIRE(activation_fn{activation_kind::elu}.value(-1.0) == Approx(std::expm1(-1.0)));
  REQUIRE(activation_fn{activation_kind::elu, 0.5}.param == 0.5);
  REQUIRE(activation_fn{}.kind == activation_kind::relu);
  for (const activation_kind k : netmorph::activation_kinds)
    if (!netmorph::has_param(k)) {
      CAPTURE(netmorph::to_string(k));
      REQUIRE(netmorph::default_param(k) == 0.0);
      REQUIRE(activation_fn{k}.param == 0.0);
    }
  static_assert(netmorph::activation_fn{netmorph::activation_kind::elu}.param == 1.0,
                "the default parameter is known at compile time");
}

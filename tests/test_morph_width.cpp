#include "support/test_support.hpp"

#include <optional>
#include <set>

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::batch_norm_weights;
using netmorph::conv2d_options;
using netmorph::conv2d_weights;
using netmorph::dense_weights;
using netmorph::tensor;
using netmorph::widen_options;
using netmorph::width_rule;
using nmtest::draw;
using nmtest::idx;

namespace {

template <typename Scalar>
batch_norm_weights<Scalar> random_bn(idx c, std::mt19937_64& rng) {
  batch_norm_weights<Scalar> bn{nmtest::randn<Scalar>({c}, rng), nmtest::randn<Scalar>({c}, rng),
                                nmtest::randn<Scalar>({c}, rng), tensor<Scalar>({c}), 1e-5};
  for (Scalar& v : bn.running_var)
    v = static_cast<Scalar>(0.5 + std::uniform_real_distribution<double>(0, 1)(rng));
  return bn;
}

template <typename Scalar>
tensor<Scalar> between(tensor<Scalar> h, const std::optional<batch_norm_weights<Scalar>>& bn,
                       activation_fn phi) {
  if (bn) h = netmorph::batch_norm_inference(std::move(h), *bn);
  return netmorph::apply(phi, std::move(h));
}

}  // namespace

TEMPLATE_TEST_CASE("widen conv -> conv preserves the function for every activation and rule",
                   "[width][property]", float, double) {
  auto rng = nmtest::make_rng(80);
  const double tol = nmtest::exact_tolerance<TestType>();
  int trial = 0;
  for (activation_kind kind : nmtest::all_activation_kinds()) {
    for (int rep = 0; rep < 12; ++rep, ++trial) {
      const idx c0 = draw(rng, 1, 4), c = draw(rng, 1, 5), c2 = draw(rng, 1, 4);
      const idx k = 2 * draw(rng, 0, 1) + 1, kn = 2 * draw(rng, 0, 1) + 1;
      const bool with_bn = rep % 2 == 0, with_bias = rep % 3 != 0;
      widen_options opt;
      opt.new_channels = c + draw(rng, 0, 6);
      opt.rule = rep % 4 == 3 ? width_rule::net2net : width_rule::netmorph;
      opt.phi = activation_fn{kind, 0.1};
      opt.seed = rng();
      CAPTURE(netmorph::to_string(kind), trial, c0, c, c2, k, kn, with_bn, with_bias,
              opt.new_channels, int(opt.rule));
      conv2d_weights<TestType> layer{
          nmtest::randn<TestType>({c, c0, k, k}, rng),
          with_bias ? nmtest::randn<TestType>({c}, rng) : tensor<TestType>(),
          conv2d_options{1, k / 2}};
      conv2d_weights<TestType> next{nmtest::randn<TestType>({c2, c, kn, kn}, rng),
                                    nmtest::randn<TestType>({c2}, rng), conv2d_options{1, kn / 2}};
      std::optional<batch_norm_weights<TestType>> bn;
      if (with_bn) bn = random_bn<TestType>(c, rng);
      auto r = netmorph::widen(layer, next, opt, bn);
      REQUIRE(r.layer.weight.dim(0) == opt.new_channels);
      REQUIRE(r.next.weight.dim(1) == opt.new_channels);
      REQUIRE(r.batch_norm.has_value() == with_bn);
      REQUIRE(nmtest::measured_error(r.report) <= tol);
      auto x = nmtest::randn<TestType>({2, c0, 7, 6}, rng);
      auto y = netmorph::conv2d(between(netmorph::conv2d(x, layer), bn, *opt.phi), next);
      auto z =
          netmorph::conv2d(between(netmorph::conv2d(x, r.layer), r.batch_norm, *opt.phi), r.next);
      REQUIRE(netmorph::relative_error(z, y) <= tol);
      // The permutation is a permutation, and old channel j sits where it says.
      std::set<idx> seen(r.permutation.begin(), r.permutation.end());
      REQUIRE(seen.size() == std::size_t(opt.new_channels));
      for (idx q = 0; q < opt.new_channels; ++q)
        if (r.permutation[q] < c)
          REQUIRE(r.layer.weight(q, 0, 0, 0) == layer.weight(r.permutation[q], 0, 0, 0));
    }
  }
}

TEMPLATE_TEST_CASE("widen conv -> flatten -> dense gives each channel its H*W columns",
                   "[width][property]", float, double) {
  auto rng = nmtest::make_rng(81);
  const double tol = nmtest::exact_tolerance<TestType>();
  int trial = 0;
  for (activation_kind kind : nmtest::all_activation_kinds()) {
    for (int rep = 0; rep < 6; ++rep, ++trial) {
      const idx c0 = draw(rng, 1, 3), c = draw(rng, 1, 4), out = draw(rng, 1, 5);
      const idx h = draw(rng, 2, 5), w = draw(rng, 2, 5);  // conv output size ("same" padding)
      const bool with_bn = rep % 2 == 1;
      widen_options opt;
      opt.new_channels = c + draw(rng, 1, 4);
      opt.rule = rep % 3 == 2 ? width_rule::net2net : width_rule::netmorph;
      opt.phi = activation_fn{kind, 0.1};
      opt.seed = rng();
      CAPTURE(netmorph::to_string(kind), trial, c0, c, out, h, w, opt.new_channels, with_bn);
      conv2d_weights<TestType> layer{nmtest::randn<TestType>({c, c0, 3, 3}, rng),
                                     nmtest::randn<TestType>({c}, rng), conv2d_options{1, 1}};
      dense_weights<TestType> next{nmtest::randn<TestType>({out, c * h * w}, rng),
                                   nmtest::randn<TestType>({out}, rng)};
      std::optional<batch_norm_weights<TestType>> bn;
      if (with_bn) bn = random_bn<TestType>(c, rng);
      auto r = netmorph::widen(layer, next, opt, bn);
      REQUIRE(r.next.weight.shape() == netmorph::shape_type{out, opt.new_channels * h * w});
      auto x = nmtest::randn<TestType>({3, c0, h, w}, rng);
      auto flat = [](tensor<TestType> t) {
        const idx n = t.dim(0);
        return std::move(t).reshape({n, t.size() / n});
      };
      auto y = netmorph::dense(flat(between(netmorph::conv2d(x, layer), bn, *opt.phi)), next);
      auto z = netmorph::dense(flat(between(netmorph::conv2d(x, r.layer), r.batch_norm, *opt.phi)),
                               r.next);
      REQUIRE(netmorph::relative_error(z, y) <= tol);
      REQUIRE(nmtest::measured_error(r.report) <= tol);  // every layout is probed
    }
  }
}

TEMPLATE_TEST_CASE("widen dense -> dense, both rules", "[width][property]", float, double) {
  auto rng = nmtest::make_rng(82);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (int trial = 0; trial < 40; ++trial) {
    const idx in = draw(rng, 1, 20), c = draw(rng, 1, 10), out = draw(rng, 1, 8);
    widen_options opt;
    opt.new_channels = c + draw(rng, 0, 10);
    opt.rule = trial % 2 ? width_rule::net2net : width_rule::netmorph;
    const auto& kinds = nmtest::all_activation_kinds();
    opt.phi = activation_fn{kinds[std::size_t(trial) % kinds.size()], 0.1};
    opt.seed = rng();
    CAPTURE(trial, in, c, out, opt.new_channels);
    dense_weights<TestType> layer{nmtest::randn<TestType>({c, in}, rng),
                                  nmtest::randn<TestType>({c}, rng)};
    dense_weights<TestType> next{nmtest::randn<TestType>({out, c}, rng),
                                 nmtest::randn<TestType>({out}, rng)};
    auto r = netmorph::widen(layer, next, opt);
    REQUIRE(nmtest::measured_error(r.report) <= tol);
    auto x = nmtest::randn<TestType>({4, in}, rng);
    auto y = netmorph::dense(netmorph::apply(*opt.phi, netmorph::dense(x, layer)), next);
    auto z = netmorph::dense(netmorph::apply(*opt.phi, netmorph::dense(x, r.layer)), r.next);
    REQUIRE(netmorph::relative_error(z, y) <= tol);
  }
}

TEST_CASE("NetMorph's width rule fills the incoming side and zeroes the outgoing for every phi",
          "[width]") {
  std::mt19937_64 rng(3);
  // Incoming side (1 x 1 x 1 + bias = 2 values) is smaller than the outgoing (8 x 3 x 3): the
  // rule used to zero the incoming side here when phi(0) = 0, which leaves ReLU units dead.
  conv2d_weights<double> layer{
      nmtest::randn<double>({2, 1, 1, 1}, rng), nmtest::randn<double>({2}, rng), {}};
  conv2d_weights<double> next{nmtest::randn<double>({8, 2, 3, 3}, rng), {}, conv2d_options{1, 1}};
  widen_options opt;
  opt.new_channels = 4;
  opt.permute = false;
  for (const auto kind : {activation_kind::relu, activation_kind::tanh, activation_kind::sigmoid,
                          activation_kind::gelu}) {
    CAPTURE(to_string(kind));
    opt.phi = activation_fn{kind};
    auto r = netmorph::widen(layer, next, opt);
    REQUIRE(nmtest::new_tensor(r.report, "layer").nonzero_fraction == Approx(1.0));
    REQUIRE(nmtest::new_tensor(r.report, "next").nonzero_fraction == Approx(0.5));
    REQUIRE(r.layer.weight(3, 0, 0, 0) != 0.0);
    REQUIRE(r.layer.bias(3) != 0.0);
    REQUIRE(r.next.weight(0, 3, 1, 1) == 0.0);
    REQUIRE(nmtest::measured_error(r.report) <= nmtest::exact_tolerance<double>());
    REQUIRE_THAT(r.report.summary(), Catch::Matchers::Contains("new outgoing side zero"));
  }
  // An unknown activation: the same rule, and a note says the probes used the identity.
  opt.phi.reset();
  auto u = netmorph::widen(layer, next, opt);
  REQUIRE(u.next.weight(0, 3, 1, 1) == 0.0);
  REQUIRE_THAT(u.report.notes.at(0), Catch::Matchers::Contains("is not given"));
}

TEST_CASE("new units get non-zero incoming filters when the old ones have no spread", "[width]") {
  // A zero-initialised layer and a single weight have standard deviation 0; scaling new filters
  // by it would leave new units zero on both sides, which never train.
  std::mt19937_64 rng(5);
  for (const idx in : {1, 6}) {
    CAPTURE(in);
    dense_weights<double> layer{tensor<double>({1, in}, in == 1 ? 0.7 : 0.0),
                                tensor<double>({1}, 0.0)};
    dense_weights<double> next{nmtest::randn<double>({3, 1}, rng), {}};
    widen_options opt;
    opt.new_channels = 4;
    opt.permute = false;
    const auto r = netmorph::widen(layer, next, opt);
    for (idx q = 1; q < 4; ++q)
      for (idx j = 0; j < in; ++j)
        REQUIRE(r.layer.weight(q, j) != 0.0);
    REQUIRE(nmtest::measured_error(r.report) <= nmtest::exact_tolerance<double>());
  }
}

TEMPLATE_TEST_CASE("widen rejects a shrinking width and mismatched layers", "[width][error]", float,
                   double) {
  using T = tensor<TestType>;
  conv2d_weights<TestType> layer{T({4, 3, 3, 3}), T({4}), {}};
  conv2d_weights<TestType> next{T({2, 4, 3, 3}), {}, {}};
  widen_options opt;
  opt.new_channels = 3;
  NM_REQUIRE_THROWS_WITH(netmorph::widen(layer, next, opt), netmorph::value_error,
                         "widen: cannot shrink from 4 to 3 channels");
  opt.new_channels = 6;
  conv2d_weights<TestType> bad_next{T({2, 5, 3, 3}), {}, {}};
  NM_REQUIRE_THROWS_WITH(netmorph::widen(layer, bad_next, opt), netmorph::shape_error,
                         "widen: layer has 4 output channels, next layer expects 5");
  dense_weights<TestType> dn{T({2, 10}), {}};
  NM_REQUIRE_THROWS_WITH(netmorph::widen(layer, dn, opt), netmorph::shape_error,
                         "widen: dense input 10 is not a multiple of the layer's 4 channels");
  auto bn = batch_norm_weights<TestType>::identity(5);
  NM_REQUIRE_THROWS_WITH(netmorph::widen(layer, next, opt, bn), netmorph::shape_error,
                         "widen: batch norm has 5 channels, expected 4");
  auto nan_layer = layer;
  nan_layer.bias(2) = std::numeric_limits<TestType>::quiet_NaN();
  NM_REQUIRE_THROWS_WITH(netmorph::widen(nan_layer, next, opt), netmorph::value_error,
                         "widen: bias holds nan at index (2)");
  dense_weights<TestType> d1{T({4, 3}), {}}, d2{T({2, 5}), {}};
  NM_REQUIRE_THROWS_WITH(netmorph::widen(d1, d2, opt), netmorph::shape_error,
                         "widen: layer has 4 outputs, next layer expects 5");
  opt.probe.size = -1;
  NM_REQUIRE_THROWS_WITH(netmorph::widen(layer, next, opt), netmorph::value_error,
                         "widen: probe.count and probe.size must be >= 0, got 4 and -1");
  opt.probe.size = 0;
  opt.new_channels = idx(1) << 40;
  NM_REQUIRE_THROWS_WITH(netmorph::widen(layer, next, opt), netmorph::value_error,
                         "widen: the widened layer of shape (1099511627776, 3, 3, 3) needs " +
                             std::string(sizeof(TestType) == 4 ? "1.2e+14" : "2.4e+14") + " bytes");
  dense_weights<TestType> d4{T({2, 4}), {}};
  NM_REQUIRE_THROWS_WITH(netmorph::widen(d1, d4, opt), netmorph::value_error,
                         "widen: the widened layer of shape (1099511627776, 3) needs");
}

TEST_CASE("widen conv -> dense says so when no input gives the flattened layout", "[width]") {
  std::mt19937_64 rng(4);
  // Kernel 1 with padding 2: every output extent is at least 5, so no input has 3 pixels.
  conv2d_weights<double> layer{nmtest::randn<double>({2, 1, 1, 1}, rng),
                               nmtest::randn<double>({2}, rng), conv2d_options{1, 2}};
  dense_weights<double> next{nmtest::randn<double>({3, 6}, rng), {}};
  widen_options opt;
  opt.new_channels = 4;
  opt.phi = activation_fn{activation_kind::relu};
  auto r = netmorph::widen(layer, next, opt);
  REQUIRE_FALSE(r.report.relative_output_error);
  REQUIRE_FALSE(r.report.max_output_error);
  REQUIRE(r.report.probes == 0);
  REQUIRE_THAT(r.report.notes.at(0), Catch::Matchers::Contains("No input size gives the layer"));
  // A layout that exists is measured.
  layer.options.padding = 0;
  auto m = netmorph::widen(layer, next, opt);
  REQUIRE(m.report.probes == 4);
  REQUIRE(nmtest::measured_error(m.report) <= nmtest::exact_tolerance<double>());
}

// The weight-level morphs on grouped and depthwise convolutions (docs/DESIGN.md §3.5): depth
// group by group, kernel growth, and the refusals of the morphs defined for ungrouped layers.
#include "support/test_support.hpp"

#include <limits>

using netmorph::conv2d_options;
using netmorph::conv2d_weights;
using netmorph::deepen_options;
using netmorph::tensor;
using netmorph::value_error;
using nmtest::draw;
using nmtest::idx;

namespace {

/// A random grouped convolution: `groups` groups of `cig` inputs and `cog` outputs, square kernel
/// `k`, with or without bias.
template <typename Scalar>
conv2d_weights<Scalar> grouped_layer(std::mt19937_64& rng, idx groups, idx cig, idx cog, idx k,
                                     idx stride, idx pad, bool bias) {
  return {nmtest::randn<Scalar>({groups * cog, cig, k, k}, rng),
          bias ? nmtest::randn<Scalar>({groups * cog}, rng) : tensor<Scalar>(),
          conv2d_options{stride, pad, groups}};
}

/// Relative error of `child(x)` against `conv2d(x, parent)` on random inputs of a random size
/// (borders of the padding included), computed independently of the morph's report.
template <typename Scalar, typename Child>
double child_error(const conv2d_weights<Scalar>& parent, Child&& child, std::mt19937_64& rng) {
  const idx k = parent.weight.dim(2), pad = parent.options.padding;
  const idx hw = std::max<idx>(1, k - 2 * pad) + draw(rng, 0, 6);
  const auto x =
      nmtest::randn<Scalar>({2, parent.weight.dim(1) * parent.options.groups, hw, hw}, rng);
  const auto y = netmorph::conv2d(x, parent);
  const auto z = child(x);
  if (z.shape() != y.shape()) return std::numeric_limits<double>::infinity();
  return netmorph::relative_error(z, y);
}

}  // namespace

TEMPLATE_TEST_CASE("deepen of a grouped or depthwise convolution is exact, group by group",
                   "[depth][groups][property]", float, double) {
  auto rng = nmtest::make_rng(60);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (int trial = 0; trial < 40; ++trial) {
    const bool depthwise = trial % 2 == 0;
    const idx groups = draw(rng, 2, 4), cig = depthwise ? 1 : draw(rng, 1, 3),
              cog = draw(rng, 1, 3), k = 2 * draw(rng, 0, 1) + 1, stride = draw(rng, 1, 2),
              pad = draw(rng, 0, 2);
    const bool bias = trial % 3 != 0;
    const auto parent = grouped_layer<TestType>(rng, groups, cig, cog, k, stride, pad, bias);
    deepen_options opt;
    opt.seed = rng();
    opt.mid_channels = groups * (cog + draw(rng, 0, 2));
    CAPTURE(trial, groups, cig, cog, k, stride, pad, bias, opt.mid_channels);
    const auto r = netmorph::deepen(parent, opt);
    REQUIRE(r.report.exact);
    REQUIRE(r.first.options.groups == groups);
    REQUIRE(r.second.options.groups == groups);
    REQUIRE(r.first.weight.shape() == netmorph::shape_type{opt.mid_channels, cig, k, k});
    REQUIRE(r.second.weight.dim(1) == opt.mid_channels / groups);
    REQUIRE(r.first.bias.empty() == !bias);
    REQUIRE(r.report.depth->c0 == groups * cig);
    REQUIRE(r.report.depth->c1 == opt.mid_channels);
    REQUIRE(*r.report.relative_output_error <= tol);
    const double e = child_error(
        parent,
        [&](const tensor<TestType>& x) {
          return netmorph::conv2d(netmorph::conv2d(x, r.first), r.second);
        },
        rng);
    REQUIRE(e <= tol);
    // The groups' random parts differ (each group's seed is mixed with its index): no two
    // groups' first-layer filters are equal. (A group whose F1 is a single number has no freedom
    // left after the rescaling that equalises F1 and F2.)
    const idx block = r.first.weight.size() / groups;
    for (idx g = 1; g < groups && block > 1; ++g)
      REQUIRE_FALSE(std::equal(r.first.weight.data(), r.first.weight.data() + block,
                               r.first.weight.data() + g * block));
  }
}

TEST_CASE("deepen of a grouped convolution refuses a C1 the groups do not divide, by name",
          "[depth][groups][error]") {
  auto rng = nmtest::make_rng(61);
  const auto parent = grouped_layer<double>(rng, 3, 2, 2, 3, 1, 1, true);
  deepen_options opt;
  opt.mid_channels = 7;
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, opt), value_error,
                         "deepen: a grouped convolution (groups = 3) deepens group by group; C1 "
                         "(mid_channels) = 7 must be a multiple of the groups");
}

TEMPLATE_TEST_CASE(
    "grow_kernel of a grouped or depthwise convolution is exact and keeps the groups",
    "[kernel][groups][property]", float, double) {
  auto rng = nmtest::make_rng(62);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (int trial = 0; trial < 30; ++trial) {
    const idx groups = draw(rng, 2, 4), cig = trial % 2 == 0 ? 1 : draw(rng, 1, 3),
              cog = draw(rng, 1, 3), k = 2 * draw(rng, 0, 1) + 1, stride = draw(rng, 1, 2),
              pad = draw(rng, 0, 2);
    const auto layer = grouped_layer<TestType>(rng, groups, cig, cog, k, stride, pad, trial % 3);
    netmorph::grow_kernel_options opt;
    opt.new_kernel = k + 2 * draw(rng, 1, 2);
    CAPTURE(trial, groups, cig, cog, k, stride, pad, opt.new_kernel);
    const auto r = netmorph::grow_kernel(layer, opt);
    REQUIRE(r.layer.options.groups == groups);
    REQUIRE(*r.report.relative_output_error <= tol);
    REQUIRE(child_error(
                layer, [&](const tensor<TestType>& x) { return netmorph::conv2d(x, r.layer); },
                rng) <= tol);
  }
}

TEST_CASE("widen and the subnet morphs refuse grouped convolutions, naming the layer's role",
          "[width][subnet][groups][error]") {
  auto rng = nmtest::make_rng(63);
  const auto grouped = grouped_layer<double>(rng, 2, 2, 2, 3, 1, 1, true);
  const conv2d_weights<double> plain{
      nmtest::randn<double>({4, 4, 3, 3}, rng), {}, conv2d_options{1, 1}};
  netmorph::widen_options w;
  w.new_channels = 6;
  NM_REQUIRE_THROWS_WITH(netmorph::widen(grouped, plain, w), value_error,
                         "widen: the layer is a grouped convolution (groups = 2)");
  NM_REQUIRE_THROWS_WITH(netmorph::widen(plain, grouped, w), value_error,
                         "widen: the next layer is a grouped convolution (groups = 2)");
  netmorph::subnet_options s;
  s.widths = {4};
  s.kernels = {3, 1};
  NM_REQUIRE_THROWS_WITH(netmorph::to_subnet(grouped, s), value_error,
                         "to_subnet: the parent is a grouped convolution (groups = 2)");
}

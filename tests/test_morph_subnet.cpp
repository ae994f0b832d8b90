#include "support/test_support.hpp"

using netmorph::conv2d_options;
using netmorph::conv2d_weights;
using netmorph::split_kind;
using netmorph::stacked_subnet_options;
using netmorph::subnet_options;
using netmorph::tensor;
using netmorph::value_error;
using nmtest::draw;
using nmtest::idx;

namespace {

/// An expanding subnet of P + 1 layers: either the parent's kernel first and widths >= C2, or
/// the kernel last and widths growing from C0. Both make every depth step exact.
subnet_options expanding_subnet(std::mt19937_64& rng, idx c0, idx c2, idx k) {
  subnet_options o;
  const idx p = draw(rng, 1, 3);
  const bool kernel_first = draw(rng, 0, 1) == 1;
  idx width = kernel_first ? c2 : c0;
  for (idx j = 0; j < p; ++j) {
    width += draw(rng, 0, 2);
    o.widths.push_back(width);
  }
  for (idx j = 0; j <= p; ++j)
    o.kernels.push_back(1);
  if (kernel_first)
    o.kernels.front() = k;
  else
    o.kernels.back() = k;
  return o;
}

}  // namespace

TEMPLATE_TEST_CASE("sequential subnets preserve the function in the expanding case",
                   "[subnet][property]", float, double) {
  auto rng = nmtest::make_rng(90);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (int trial = 0; trial < 60; ++trial) {
    const idx c0 = draw(rng, 1, 4), c2 = draw(rng, 1, 4), k = 2 * draw(rng, 0, 2) + 1;
    const idx stride = draw(rng, 1, 2), pad = draw(rng, 0, 2);
    subnet_options o = expanding_subnet(rng, c0, c2, k);
    o.step.seed = rng();
    CAPTURE(trial, c0, c2, k, stride, pad, o.widths, o.kernels);
    auto parent = nmtest::random_conv<TestType>(rng, c2, c0, k, stride, pad);
    auto r = netmorph::to_subnet(parent, o);
    REQUIRE(r.chain.layers.size() == o.widths.size() + 1);
    REQUIRE(r.chain.between.size() == o.widths.size());
    REQUIRE(r.report.exact);
    REQUIRE(r.report.steps.size() == o.widths.size());
    REQUIRE(nmtest::measured_error(r.report) <= tol);
    const idx hw = std::max<idx>(1, k - 2 * pad) + draw(rng, 0, 5);
    auto x = nmtest::randn<TestType>({2, c0, hw, hw}, rng);
    REQUIRE(netmorph::relative_error(netmorph::forward_chain(x, r.chain),
                                     netmorph::conv2d(x, parent)) <= tol);
  }
}

TEMPLATE_TEST_CASE("a subnet with spread kernels reaches K~ > K exactly when wide enough",
                   "[subnet]", float, double) {
  std::mt19937_64 rng(91);
  auto parent = nmtest::random_conv<TestType>(rng, 3, 2, 3, 1, 1);
  subnet_options o;
  o.kernels = {3, 3, 1};  // K~ = 5 > K = 3: the kernel grows too
  o.widths = {40, 40};
  auto r = netmorph::to_subnet(parent, o);
  CAPTURE(r.report.summary());
  REQUIRE(r.report.subnet->k_tilde == 5);
  REQUIRE(r.chain.layers[0].options.padding == 2);
  REQUIRE(r.chain.layers[1].options.padding == 0);
  REQUIRE(r.report.exact);
  auto x = nmtest::randn<TestType>({2, 2, 6, 6}, rng);
  REQUIRE(
      netmorph::relative_error(netmorph::forward_chain(x, r.chain), netmorph::conv2d(x, parent)) <=
      nmtest::exact_tolerance<TestType>());
  REQUIRE(nmtest::new_tensor(r.report, "layer 0").nonzero_fraction >= 0.99);
}

TEMPLATE_TEST_CASE("stacked subnets with 2-4 paths sum to the parent", "[subnet][property]", float,
                   double) {
  auto rng = nmtest::make_rng(92);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (int trial = 0; trial < 30; ++trial) {
    const idx c0 = draw(rng, 1, 4), c2 = draw(rng, 1, 4), k = 2 * draw(rng, 0, 1) + 1;
    const idx n = draw(rng, 2, 4), stride = draw(rng, 1, 2), pad = draw(rng, 0, 1);
    stacked_subnet_options so;
    for (idx i = 0; i < n; ++i)
      so.paths.push_back(expanding_subnet(rng, c0, c2, k));
    so.split = trial % 3 == 0   ? split_kind::equal
               : trial % 3 == 1 ? split_kind::random_convex
                                : split_kind::given;
    if (so.split == split_kind::given) {
      so.weights.assign(static_cast<std::size_t>(n), 0.0);
      for (idx i = 0; i + 1 < n; ++i)
        so.weights[i] = 0.5 / double(n) * double(i + 1);
      double s = 0;
      for (idx i = 0; i + 1 < n; ++i)
        s += so.weights[i];
      so.weights.back() = 1.0 - s;
    }
    so.seed = rng();
    CAPTURE(trial, c0, c2, k, n, stride, pad, int(so.split));
    auto parent = nmtest::random_conv<TestType>(rng, c2, c0, k, stride, pad);
    auto r = netmorph::to_stacked_subnet(parent, so);
    REQUIRE(r.paths.size() == std::size_t(n));
    double wsum = 0;
    for (double w : r.split)
      wsum += w;
    REQUIRE(wsum == Approx(1.0));
    REQUIRE(r.report.subnet->split == r.split);
    REQUIRE(r.report.steps.size() == std::size_t(n));
    REQUIRE(r.report.exact);
    REQUIRE(nmtest::measured_error(r.report) <= tol);
    const idx hw = std::max<idx>(1, k - 2 * pad) + draw(rng, 0, 4);
    auto x = nmtest::randn<TestType>({2, c0, hw, hw}, rng);
    REQUIRE(netmorph::relative_error(netmorph::forward_stacked(x, r.paths),
                                     netmorph::conv2d(x, parent)) <= tol);
  }
}

TEMPLATE_TEST_CASE("subnet morphs reject sizes that cannot reach K~ and bad splits",
                   "[subnet][error]", float, double) {
  std::mt19937_64 rng(1);
  auto parent = nmtest::random_conv<TestType>(rng, 2, 2, 3, 1, 1);
  subnet_options o;
  o.widths = {4};
  o.kernels = {1, 1};
  NM_REQUIRE_THROWS_WITH(
      netmorph::to_subnet(parent, o), value_error,
      "to_subnet: the kernels reach K~ = 1, smaller than the parent's kernel K = 3");
  o.kernels = {2, 3};
  NM_REQUIRE_THROWS_WITH(
      netmorph::to_subnet(parent, o), value_error,
      "to_subnet: the kernels reach K~ = 4, which grows the parent's kernel K = 3 by 1");
  o.kernels = {3};
  NM_REQUIRE_THROWS_WITH(netmorph::to_subnet(parent, o), value_error,
                         "to_subnet: a subnet of P + 1 layers needs P >= 1 widths and P + 1 "
                         "kernels, got 1 widths and 1 kernels");
  o.kernels = {3, 1};
  o.widths = {0};
  NM_REQUIRE_THROWS_WITH(netmorph::to_subnet(parent, o), value_error,
                         "to_subnet: width 1 must be >= 1, got 0");
  o.widths = {1};
  o.kernels = {1, 1, 3};
  o.widths = {1, 1};
  o.step.algorithm = netmorph::depth_algorithm::general;
  o.step.max_iter = 5;
  // Widths of 1 cannot carry a 2-channel parent.
  NM_REQUIRE_THROWS_WITH(netmorph::to_subnet(parent, o), netmorph::numerical_error,
                         "to_subnet: relative residual");

  stacked_subnet_options so;
  NM_REQUIRE_THROWS_WITH(netmorph::to_stacked_subnet(parent, so), value_error,
                         "to_stacked_subnet: needs at least one path, got 0");
  subnet_options good;
  good.widths = {4};
  good.kernels = {3, 1};
  so.paths = {good, good};
  so.split = split_kind::given;
  so.weights = {0.5, 0.4};
  NM_REQUIRE_THROWS_WITH(
      netmorph::to_stacked_subnet(parent, so), value_error,
      "to_stacked_subnet: split weights sum to 0.9, so the paths would not sum to G");
  so.weights = {1.0};
  NM_REQUIRE_THROWS_WITH(netmorph::to_stacked_subnet(parent, so), value_error,
                         "to_stacked_subnet: 1 split weights for 2 paths");
  NM_REQUIRE_THROWS_WITH(netmorph::forward_stacked(tensor<TestType>({1, 2, 4, 4}),
                                                   std::vector<netmorph::conv2d_chain<TestType>>{}),
                         value_error, "forward_stacked: no paths");
  netmorph::conv2d_chain<TestType> two{{parent, parent}, {}};
  NM_REQUIRE_THROWS_WITH(netmorph::forward_chain(tensor<TestType>({1, 2, 4, 4}), two), value_error,
                         "forward_chain: 2 layers need 1 between activations, got 0");
}

TEMPLATE_TEST_CASE("subnet options reject step fields the widths and kernels set",
                   "[subnet][error]", float, double) {
  std::mt19937_64 rng(2);
  auto parent = nmtest::random_conv<TestType>(rng, 2, 2, 3, 1, 1);
  subnet_options o;
  o.widths = {4};
  o.kernels = {3, 1};
  auto with = [&](auto f) {
    subnet_options c = o;
    f(c.step);
    return c;
  };
  NM_REQUIRE_THROWS_WITH(
      netmorph::to_subnet(parent, with([](netmorph::deepen_options& s) { s.mid_channels = 5; })),
      value_error, "to_subnet: step.mid_channels must stay 0 (widths set it), got 5");
  NM_REQUIRE_THROWS_WITH(
      netmorph::to_subnet(parent, with([](netmorph::deepen_options& s) { s.k1 = 3; })), value_error,
      "to_subnet: step.k1 must stay 0 (kernels set it), got 3");
  NM_REQUIRE_THROWS_WITH(
      netmorph::to_subnet(parent, with([](netmorph::deepen_options& s) { s.k2 = 1; })), value_error,
      "to_subnet: step.k2 must stay 0 (kernels set it), got 1");
  NM_REQUIRE_THROWS_WITH(netmorph::to_subnet(parent, with([](netmorph::deepen_options& s) {
                                               s.insert_batch_norm = true;
                                             })),
                         value_error, "to_subnet: step.insert_batch_norm must be false");
  NM_REQUIRE_THROWS_WITH(netmorph::to_subnet(parent, with([](netmorph::deepen_options& s) {
                                               s.padding = netmorph::depth_padding::same;
                                             })),
                         value_error, "to_subnet: step.padding must be exact");
  stacked_subnet_options so;
  so.paths = {o, with([](netmorph::deepen_options& s) { s.k1 = 3; })};
  NM_REQUIRE_THROWS_WITH(netmorph::to_stacked_subnet(parent, so), value_error,
                         "to_stacked_subnet: step.k1 must stay 0 (kernels set it), got 3");
  // Far beyond memory: the size it would need, not std::bad_alloc.
  subnet_options huge = o;
  huge.widths = {idx(1) << 40};
  NM_REQUIRE_THROWS_WITH(
      netmorph::to_subnet(parent, huge), value_error,
      "to_subnet: layer 0 of shape (1099511627776, 2, 3, 3) needs 1.6e+14 bytes");
}

TEMPLATE_TEST_CASE("stacked paths built from equal options differ and still sum exactly",
                   "[subnet]", float, double) {
  auto rng = nmtest::make_rng(93);
  auto parent = nmtest::random_conv<TestType>(rng, 3, 2, 3, 1, 1);
  subnet_options so;
  so.kernels = {3, 3};  // K~ = 5: both factors are solved (a random, seeded part in each)
  so.widths = {40};
  so.step.seed = rng();
  stacked_subnet_options st;
  st.paths = {so, so};
  st.seed = rng();
  auto r = netmorph::to_stacked_subnet(parent, st);
  REQUIRE(r.paths.size() == 2);
  for (std::size_t j = 0; j < 2; ++j)
    REQUIRE(r.paths[0].layers[j].weight != r.paths[1].layers[j].weight);
  REQUIRE(r.report.exact);
  REQUIRE(nmtest::measured_error(r.report) <= nmtest::exact_tolerance<TestType>());
  auto x = nmtest::randn<TestType>({2, 2, 7, 7}, rng);
  REQUIRE(netmorph::relative_error(netmorph::forward_stacked(x, r.paths),
                                   netmorph::conv2d(x, parent)) <=
          nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("forward_chain applies the between P-activations", "[subnet]", float, double) {
  auto rng = nmtest::make_rng(94);
  auto parent = nmtest::random_conv<TestType>(rng, 3, 2, 3, 1, 1);
  subnet_options o;
  o.widths = {4, 5};
  o.kernels = {3, 1, 1};
  o.step.phi = netmorph::activation_fn{netmorph::activation_kind::tanh};
  o.step.seed = rng();
  auto r = netmorph::to_subnet(parent, o);
  REQUIRE(r.chain.between.size() == 2);
  for (const auto& b : r.chain.between) {
    REQUIRE(b.phi.kind == netmorph::activation_kind::tanh);
    REQUIRE(b.a == 1.0);
  }
  // Move the P-activations off the identity: forward_chain must follow them, as a hand loop does.
  r.chain.between[0] = netmorph::make_p_activation(*o.step.phi, 0.3);
  r.chain.between[1] = netmorph::make_p_activation(*o.step.phi, 0.0);
  auto x = nmtest::randn<TestType>({2, 2, 6, 6}, rng);
  tensor<TestType> h = x;
  for (std::size_t j = 0; j < r.chain.layers.size(); ++j) {
    h = nmtest::naive_conv2d(h, r.chain.layers[j].weight, r.chain.layers[j].bias,
                             r.chain.layers[j].options.stride, r.chain.layers[j].options.padding);
    if (j + 1 < r.chain.layers.size())
      for (TestType& v : h)
        v = static_cast<TestType>(r.chain.between[j].value(double(v)));
  }
  const auto z = netmorph::forward_chain(x, r.chain);
  REQUIRE(netmorph::relative_error(z, h) <= nmtest::exact_tolerance<TestType>());
  REQUIRE(netmorph::relative_error(z, netmorph::conv2d(x, parent)) > 1e-3);  // not the identity
}

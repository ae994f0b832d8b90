#include "support/test_support.hpp"

#include <Eigen/SVD>

#include <cmath>
#include <limits>
#include <string>

using netmorph::activation_kind;
using netmorph::conv2d_options;
using netmorph::conv2d_weights;
using netmorph::deepen_options;
using netmorph::depth_algorithm;
using netmorph::tensor;
using netmorph::value_error;
using nmtest::draw;
using nmtest::idx;

namespace {

/// Relative error of the child against the parent on fresh random inputs of a random size,
/// computed here, independently of the report.
template <typename Scalar, typename Act>
double child_error(const conv2d_weights<Scalar>& parent, const conv2d_weights<Scalar>& first,
                   const conv2d_weights<Scalar>& second, std::mt19937_64& rng, Act act_between) {
  const idx k = parent.weight.dim(2), pad = parent.options.padding;
  const idx hw = std::max<idx>(1, k - 2 * pad) + draw(rng, 0, 6);
  auto x = nmtest::randn<Scalar>({2, parent.weight.dim(1), hw, hw}, rng);
  auto y = netmorph::conv2d(x, parent);
  auto h = netmorph::conv2d(x, first);
  for (Scalar& v : h)
    v = act_between(v);
  auto z = netmorph::conv2d(h, second);
  if (z.shape() != y.shape()) return std::numeric_limits<double>::infinity();
  return netmorph::relative_error(z, y);
}

template <typename Scalar>
double child_error(const conv2d_weights<Scalar>& parent, const conv2d_weights<Scalar>& first,
                   const conv2d_weights<Scalar>& second, std::mt19937_64& rng) {
  return child_error(parent, first, second, rng, [](Scalar v) { return v; });
}

}  // namespace

TEMPLATE_TEST_CASE("deepen (practical) preserves the function in every expanding case",
                   "[depth][property]", float, double) {
  auto rng = nmtest::make_rng(50);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (int trial = 0; trial < 200; ++trial) {
    const idx c0 = draw(rng, 1, 5), c2 = draw(rng, 1, 5), k = 2 * draw(rng, 0, 2) + 1;
    const idx stride = draw(rng, 1, 2), pad = draw(rng, 0, 2);
    const bool bias = trial % 4 != 0;
    deepen_options opt;
    opt.seed = rng();
    idx c1;
    if (trial % 3 == 0) {
      // F1 1x1, F2 carries the kernel: exact once C1 >= C0 (a Kronecker-reduced step).
      opt.k1 = 1;
      opt.k2 = k + 2 * draw(rng, 0, 1);
      c1 = c0 + draw(rng, 0, 3);
    } else {
      // F1 carries the parent's kernel (or a larger one): exact once C1 >= C2.
      opt.k1 = k + 2 * draw(rng, 0, 1);
      opt.k2 = 2 * draw(rng, 0, 2) + 1;
      c1 = c2 + draw(rng, 0, 3);
    }
    opt.mid_channels = c1;
    CAPTURE(trial, c0, c1, c2, k, opt.k1, opt.k2, stride, pad, bias);
    auto parent = nmtest::random_conv<TestType>(rng, c2, c0, k, stride, pad, bias);
    auto r = netmorph::deepen(parent, opt);
    CAPTURE(r.report.summary());
    REQUIRE(r.report.exact);
    REQUIRE(nmtest::measured_error(r.report) <= tol);
    REQUIRE(r.first.weight.shape() == netmorph::shape_type{c1, c0, opt.k1, opt.k1});
    REQUIRE(r.second.weight.shape() == netmorph::shape_type{c2, c1, opt.k2, opt.k2});
    REQUIRE(r.first.bias.empty() == !bias);
    REQUIRE(r.second.bias.empty() == !bias);
    REQUIRE(child_error(parent, r.first, r.second, rng) <= tol);
  }
}

TEMPLATE_TEST_CASE("condition (7) cases converge in one iteration with dense new filters",
                   "[depth][property]", float, double) {
  auto rng = nmtest::make_rng(51);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (int trial = 0; trial < 60; ++trial) {
    const idx c0 = draw(rng, 2, 5), c2 = draw(rng, 2, 5), k = 2 * draw(rng, 0, 1) + 1;
    deepen_options opt;
    opt.k1 = k + 2 * draw(rng, 0, 1);
    opt.k2 = 2 * draw(rng, 0, 1) + 1;
    opt.algorithm = trial % 2 ? depth_algorithm::general : depth_algorithm::practical;
    const idx kt = opt.k1 + opt.k2 - 1;
    // Smallest C1 with min(C1 C0 K1^2, C2 C1 K2^2) >= C2 C0 K~^2, plus a random margin.
    const idx need1 = (c2 * kt * kt + opt.k1 * opt.k1 - 1) / (opt.k1 * opt.k1);
    const idx need2 = (c0 * kt * kt + opt.k2 * opt.k2 - 1) / (opt.k2 * opt.k2);
    opt.mid_channels = std::max(need1, need2) + draw(rng, 0, 3);
    opt.seed = rng();
    const idx stride = draw(rng, 1, 2), pad = draw(rng, 0, (k - 1) / 2);
    CAPTURE(trial, c0, opt.mid_channels, c2, k, opt.k1, opt.k2, stride, pad);
    auto parent = nmtest::random_conv<TestType>(rng, c2, c0, k, stride, pad, true);
    auto r = netmorph::deepen(parent, opt);
    CAPTURE(r.report.summary());
    REQUIRE(r.report.depth);
    REQUIRE(r.report.depth->condition7);
    REQUIRE(r.report.depth->iterations == 1);
    REQUIRE(r.report.depth->solved_k1 == opt.k1);
    REQUIRE(r.report.depth->solved_k2 == opt.k2);
    REQUIRE(nmtest::measured_error(r.report) <= tol);
    const auto f1 = nmtest::new_tensor(r.report, "F1"), f2 = nmtest::new_tensor(r.report, "F2");
    REQUIRE(f1.nonzero_fraction >= 0.99);
    REQUIRE(f2.nonzero_fraction >= 0.99);
    // Rescaling gives both new tensors the same standard deviation.
    REQUIRE(f1.std == Approx(f2.std).epsilon(1e-3));
    REQUIRE(child_error(parent, r.first, r.second, rng) <= tol);
  }
}

TEST_CASE("Algorithm 2 shrinks the non-expanding kernel where Algorithm 1 cannot be exact",
          "[depth]") {
  std::mt19937_64 rng(5);
  auto parent = nmtest::random_conv<double>(rng, 8, 8, 3, 1, 1, true);
  deepen_options opt;
  opt.k1 = 3;
  opt.k2 = 3;  // 2 * 8*8*9 parameters cannot express 8*8*25 of G~ (K~ = 5)
  auto r = netmorph::deepen(parent, opt);
  CAPTURE(r.report.summary());
  REQUIRE(r.report.exact);
  REQUIRE(r.report.depth->solved_k1 == 3);
  REQUIRE(r.report.depth->solved_k2 == 1);
  REQUIRE(r.second.weight.shape() == netmorph::shape_type{8, 8, 3, 3});
  // A 1x1 filter padded back to 3x3, and the report says so in words: one 3x3 half-step is
  // underdetermined from C1 = ceil(8 * 25 / 9) = 23 on.
  REQUIRE(nmtest::new_tensor(r.report, "F2").nonzero_fraction == Approx(1.0 / 9.0));
  REQUIRE(r.report.notes.size() == 1);
  REQUIRE_THAT(r.report.notes[0],
               Catch::Matchers::Contains("F2 was solved at 1x1 and zero-padded to 3x3: 89% of its "
                                         "weights are zero; a dense 3x3 F2 needs C1 >= 23"));
  REQUIRE_THAT(r.report.summary(), Catch::Matchers::Contains("note: F2 was solved at 1x1"));
  REQUIRE(child_error(parent, r.first, r.second, rng) <= nmtest::exact_tolerance<double>());
  deepen_options wide = opt;
  wide.mid_channels = 23;
  auto dense23 = netmorph::deepen(parent, wide);
  REQUIRE(dense23.report.depth->solved_k2 == 3);
  REQUIRE(dense23.report.notes.empty());

  opt.algorithm = depth_algorithm::general;
  opt.max_iter = 20;
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, opt), netmorph::numerical_error,
                         "deepen: relative residual");
  opt.require_exact = false;
  auto g = netmorph::deepen(parent, opt);
  REQUIRE_FALSE(g.report.exact);
  REQUIRE(g.report.depth->iterations == 20);
  REQUIRE(*g.report.relative_residual > 1e-3);
  REQUIRE(nmtest::measured_error(g.report) > 1e-3);
}

TEST_CASE("a rank-deficient step is caught and Algorithm 1 iterates to the tolerance", "[depth]") {
  // One input and one output channel, K1 = K2 = 3: three generic 3x3 filters have Koszul
  // syzygies, so neither half-step system is surjective although both have more unknowns than
  // equations. The solver falls back to COD and the alternation still converges.
  std::mt19937_64 rng(9);
  auto parent = nmtest::random_conv<double>(rng, 1, 1, 3, 1, 1, true);
  deepen_options opt;
  opt.mid_channels = 3;
  opt.k1 = 3;
  opt.k2 = 3;
  opt.algorithm = depth_algorithm::general;
  auto r = netmorph::deepen(parent, opt);
  CAPTURE(r.report.summary());
  REQUIRE(r.report.depth->fallback);
  REQUIRE(r.report.depth->iterations > 1);
  REQUIRE(*r.report.relative_residual <= opt.tolerance);
  REQUIRE(child_error(parent, r.first, r.second, rng) <= nmtest::exact_tolerance<double>());
}

TEMPLATE_TEST_CASE("IdMorph is exact for ReLU and not for tanh; its identity is sparse",
                   "[depth][idmorph]", float, double) {
  auto rng = nmtest::make_rng(52);
  const double tol = nmtest::exact_tolerance<TestType>();
  auto relu = [](TestType v) { return v > 0 ? v : TestType(0); };
  auto tanh_ = [](TestType v) { return std::tanh(v); };
  for (int trial = 0; trial < 20; ++trial) {
    const idx c0 = draw(rng, 1, 5), c2 = draw(rng, 2, 6), k = 2 * draw(rng, 0, 2) + 1;
    const idx stride = draw(rng, 1, 2), pad = draw(rng, 0, 2);
    deepen_options opt;
    opt.algorithm = depth_algorithm::idmorph;
    opt.k2 = 2 * draw(rng, 0, 1) + 1;
    CAPTURE(trial, c0, c2, k, opt.k2, stride, pad);
    auto parent = nmtest::random_conv<TestType>(rng, c2, c0, k, stride, pad, true);
    auto r = netmorph::deepen(parent, opt);
    REQUIRE(r.report.exact);
    REQUIRE(nmtest::measured_error(r.report) <= tol);
    // O(C) non-zeros in the identity against O(C^2 K^2) parameters.
    REQUIRE(nmtest::new_tensor(r.report, "F2").nonzero_fraction ==
            Approx(1.0 / double(c2 * opt.k2 * opt.k2)));
    // The summary says what IdMorph is, not what the solver would have done.
    const std::string sum = r.report.summary();
    CAPTURE(sum);
    REQUIRE_THAT(sum, Catch::Matchers::Contains("F1 = G, F2 = identity filter"));
    REQUIRE_THAT(sum, !Catch::Matchers::Contains("condition (7)"));
    REQUIRE_THAT(sum, !Catch::Matchers::Contains("one half-step can be exact"));
    REQUIRE_THAT(sum, !Catch::Matchers::Contains("solved at"));
    // Net2Net inserts the identity behind the parent's activation: phi(I phi(Gx)) = phi(Gx)
    // holds for idempotent ReLU only.
    const idx hw = std::max<idx>(1, k - 2 * pad) + 4;
    auto x = nmtest::randn<TestType>({2, c0, hw, hw}, rng);
    auto apply = [](tensor<TestType> t, auto f) {
      for (TestType& v : t)
        v = f(v);
      return t;
    };
    auto parent_relu = apply(netmorph::conv2d(x, parent), relu);
    auto child_relu =
        apply(netmorph::conv2d(apply(netmorph::conv2d(x, r.first), relu), r.second), relu);
    REQUIRE(netmorph::relative_error(child_relu, parent_relu) <= tol);
    auto parent_tanh = apply(netmorph::conv2d(x, parent), tanh_);
    auto child_tanh =
        apply(netmorph::conv2d(apply(netmorph::conv2d(x, r.first), tanh_), r.second), tanh_);
    REQUIRE(netmorph::relative_error(child_tanh, parent_tanh) > 1e-2);
    // NetMorph with the linear (a = 1) activation between the layers is exact and dense.
    deepen_options nm;
    nm.mid_channels = c2;
    nm.k2 = opt.k2;
    nm.seed = rng();
    auto n = netmorph::deepen(parent, nm);
    REQUIRE(n.report.exact);
    REQUIRE(nmtest::new_tensor(n.report, "F1").nonzero_fraction >= 0.99);
  }
}

TEMPLATE_TEST_CASE("'same' paddings are an approximate option that reports its border error",
                   "[depth]", float, double) {
  std::mt19937_64 rng(6);
  auto parent = nmtest::random_conv<TestType>(rng, 4, 3, 3, 1, 1, true);
  deepen_options opt;
  opt.mid_channels = 32;
  opt.k1 = 3;
  opt.k2 = 3;
  opt.padding = netmorph::depth_padding::same;
  opt.probe.size = 9;
  auto r = netmorph::deepen(parent, opt);
  REQUIRE(r.first.options.padding == 1);
  REQUIRE(r.second.options.padding == 1);
  REQUIRE(*r.report.relative_residual <= opt.tolerance);
  REQUIRE_FALSE(r.report.exact);
  REQUIRE_THAT(r.report.notes.at(0), Catch::Matchers::Contains("approximate at the border"));
  // The report's border error against one measured here on the same probes with the naive
  // convolution: both well above the rounding floor, and equal up to rounding.
  const auto x = netmorph::detail::probe_input<TestType>(opt.probe, {3, 9, 9}, opt.seed);
  REQUIRE(x);
  auto naive = [](const tensor<TestType>& in, const conv2d_weights<TestType>& l) {
    return nmtest::naive_conv2d(in, l.weight, l.bias, l.options.stride, l.options.padding);
  };
  const double independent =
      netmorph::relative_error(naive(naive(*x, r.first), r.second), naive(*x, parent));
  REQUIRE(independent > 1e-3);
  REQUIRE(nmtest::measured_error(r.report) > 1e-3);
  REQUIRE(nmtest::measured_error(r.report) == Approx(independent).epsilon(1e-3));
  opt.padding = netmorph::depth_padding::exact;
  auto e = netmorph::deepen(parent, opt);
  REQUIRE(e.first.options.padding == 2);
  REQUIRE(e.second.options.padding == 0);
  REQUIRE(e.report.exact);
}

TEMPLATE_TEST_CASE("a strided parent puts its stride on the right child layer", "[depth]", float,
                   double) {
  std::mt19937_64 rng(7);
  auto parent = nmtest::random_conv<TestType>(rng, 4, 3, 3, 2, 1, true);
  deepen_options opt;
  opt.mid_channels = 40;
  opt.k2 = 3;
  auto r = netmorph::deepen(parent, opt);
  REQUIRE(r.first.options.stride == 1);
  REQUIRE(r.second.options.stride == 2);
  REQUIRE(child_error(parent, r.first, r.second, rng) <= nmtest::exact_tolerance<TestType>());
  opt.k2 = 1;
  auto s = netmorph::deepen(parent, opt);
  REQUIRE(s.first.options.stride == 2);
  REQUIRE(s.second.options.stride == 1);
  REQUIRE(child_error(parent, s.first, s.second, rng) <= nmtest::exact_tolerance<TestType>());
  opt.stride = netmorph::stride_placement::second;
  auto t = netmorph::deepen(parent, opt);
  REQUIRE(t.second.options.stride == 2);
  REQUIRE(child_error(parent, t.first, t.second, rng) <= nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("deepen of a dense layer factorises W = W2 W1 with the bias rule",
                   "[depth][dense][property]", float, double) {
  auto rng = nmtest::make_rng(53);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (int trial = 0; trial < 40; ++trial) {
    const idx in = draw(rng, 1, 30), out = draw(rng, 1, 12);
    const idx c1 = trial % 2 ? out + draw(rng, 0, 5) : in + draw(rng, 0, 5);
    CAPTURE(trial, in, out, c1);
    netmorph::dense_weights<TestType> parent{nmtest::randn<TestType>({out, in}, rng),
                                             nmtest::randn<TestType>({out}, rng)};
    deepen_options opt;
    opt.mid_channels = c1;
    opt.seed = rng();
    auto r = netmorph::deepen(parent, opt);
    REQUIRE(r.first.weight.shape() == netmorph::shape_type{c1, in});
    REQUIRE(r.second.weight.shape() == netmorph::shape_type{out, c1});
    REQUIRE(r.report.exact);
    auto x = nmtest::randn<TestType>({5, in}, rng);
    auto y = netmorph::dense(x, parent);
    auto z = netmorph::dense(netmorph::dense(x, r.first), r.second);
    REQUIRE(netmorph::relative_error(z, y) <= tol);
    REQUIRE(netmorph::relative_error(netmorph::forward(x, r), y) <= tol);
    REQUIRE(nmtest::measured_error(r.report) <= tol);
  }
}

TEMPLATE_TEST_CASE(
    "deepen of a square dense layer is one direct half-step with dense full-rank factors",
    "[depth][dense]", float, double) {
  auto rng = nmtest::make_rng(55);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (const idx d : {idx(8), idx(48)}) {  // 48 > 32 output channels: the solver sketches
    CAPTURE(d);
    netmorph::dense_weights<TestType> parent{nmtest::randn<TestType>({d, d}, rng),
                                             nmtest::randn<TestType>({d}, rng)};
    deepen_options opt;
    opt.seed = rng();
    auto r = netmorph::deepen(parent, opt);
    CAPTURE(r.report.summary());
    REQUIRE(r.report.exact);
    REQUIRE(*r.report.relative_residual <= nmtest::residual_tolerance());
    REQUIRE(r.report.depth->iterations == 1);
    REQUIRE(r.report.depth->half_steps == 1);
    REQUIRE_FALSE(r.report.depth->fallback);
    REQUIRE_FALSE(r.report.depth->kronecker);
    REQUIRE(nmtest::measured_error(r.report) <= tol);
    const auto f1 = nmtest::new_tensor(r.report, "F1"), f2 = nmtest::new_tensor(r.report, "F2");
    REQUIRE(f1.nonzero_fraction >= 0.99);
    REQUIRE(f2.nonzero_fraction >= 0.99);
    REQUIRE(f1.std == Approx(f2.std).epsilon(1e-3));
    auto x = nmtest::randn<TestType>({5, d}, rng);
    REQUIRE(netmorph::relative_error(netmorph::forward(x, r), netmorph::dense(x, parent)) <= tol);
    // Both factors have full rank: F1 is well conditioned (a scaled orthonormal start), F2 as
    // well conditioned as the parent.
    auto cond = [](const tensor<TestType>& w) {
      const Eigen::MatrixXd m = w.matrix().template cast<double>();
      const Eigen::VectorXd sv = Eigen::JacobiSVD<Eigen::MatrixXd>(m).singularValues();
      return sv(0) / sv(sv.size() - 1);
    };
    REQUIRE(cond(r.first.weight) <= 1 + 1e-3);
    REQUIRE(cond(r.second.weight) <= 1.01 * cond(parent.weight));
  }
  // The half-step deepen takes: its semi-orthogonal start makes the square system one product.
  std::mt19937_64 gen(3);
  const tensor<double> g = nmtest::randn<double>({40, 40, 1, 1}, gen);
  const tensor<double> start = netmorph::detail::random_semi_orthogonal({40, 40, 1, 1}, gen);
  const auto step = netmorph::solve::solve_second_factor(g, start, 1, gen);
  REQUIRE(step.report.route == netmorph::solve::ls_route::orthonormal);
  REQUIRE(step.report.relative_residual <= nmtest::residual_tolerance());
}

TEST_CASE("deepen is reproducible from its seed", "[depth]") {
  std::mt19937_64 rng(8);
  auto parent = nmtest::random_conv<double>(rng, 4, 3, 3, 1, 1, true);
  deepen_options opt;
  opt.mid_channels = 40;
  opt.k2 = 3;
  opt.seed = 42;
  auto a = netmorph::deepen(parent, opt), b = netmorph::deepen(parent, opt);
  REQUIRE(a.first.weight == b.first.weight);
  REQUIRE(a.second.weight == b.second.weight);
  REQUIRE(a.second.bias == b.second.bias);
  opt.seed = 43;
  REQUIRE_FALSE(netmorph::deepen(parent, opt).first.weight == a.first.weight);
}

TEMPLATE_TEST_CASE("deepen rejects bad input with named messages", "[depth][error]", float,
                   double) {
  std::mt19937_64 rng(1);
  auto parent = nmtest::random_conv<TestType>(rng, 4, 3, 3, 1, 1, true);
  deepen_options opt;
  auto with = [&](auto f) {
    deepen_options o = opt;
    f(o);
    return o;
  };
  NM_REQUIRE_THROWS_WITH(
      netmorph::deepen(parent, with([](deepen_options& o) {
                         o.k1 = 1;
                         o.k2 = 1;
                       })),
      value_error,
      "deepen: K~ = K1 + K2 - 1 = 1 + 1 - 1 = 1 is smaller than the parent's kernel K = 3");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, with([](deepen_options& o) { o.k2 = 2; })),
                         value_error,
                         "deepen: K~ = K1 + K2 - 1 = 4 grows the parent's kernel K = 3 by 1");
  NM_REQUIRE_THROWS_WITH(
      netmorph::deepen(parent, with([](deepen_options& o) { o.mid_channels = -2; })), value_error,
      "deepen: C1 (mid_channels) must be >= 1, got -2");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, with([](deepen_options& o) { o.k2 = -1; })),
                         value_error, "deepen: kernels must be >= 1, got K1 = 3, K2 = -1");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, with([](deepen_options& o) { o.tolerance = 0; })),
                         value_error, "deepen: tolerance must be positive");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, with([](deepen_options& o) { o.max_iter = 0; })),
                         value_error, "deepen: max_iter must be >= 1, got 0");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, with([](deepen_options& o) { o.noise = -1; })),
                         value_error, "deepen: noise must be >= 0");

  auto nan_parent = parent;
  nan_parent.weight(1, 2, 0, 1) = std::numeric_limits<TestType>::quiet_NaN();
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(nan_parent), value_error,
                         "deepen: weight holds nan at index (1, 2, 0, 1)");
  auto inf_parent = parent;
  inf_parent.bias(3) = std::numeric_limits<TestType>::infinity();
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(inf_parent), value_error,
                         "deepen: bias holds inf at index (3)");
  auto bad_bias = parent;
  bad_bias.bias = tensor<TestType>({5});
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(bad_bias), netmorph::shape_error,
                         "deepen: bias must have shape (4), got (5)");
  auto rect = parent;
  rect.weight = tensor<TestType>({4, 3, 3, 1});
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(rect), netmorph::shape_error,
                         "deepen: kernel must be square and non-empty, got 3x1");
  auto strided = parent;
  strided.options.stride = 2;
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(strided, with([](deepen_options& o) {
                                            o.k2 = 3;
                                            o.stride = netmorph::stride_placement::first;
                                          })),
                         value_error,
                         "deepen: stride 2 cannot go on the first child layer when K2 = 3 > 1");
  NM_REQUIRE_THROWS_WITH(
      netmorph::deepen(parent, with([](deepen_options& o) {
                         o.algorithm = depth_algorithm::idmorph;
                         o.mid_channels = 5;
                       })),
      value_error, "deepen: IdMorph needs C1 = C2 (the identity is square), got C1 = 5, C2 = 4");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, with([](deepen_options& o) {
                                            o.algorithm = depth_algorithm::idmorph;
                                            o.k1 = 5;
                                          })),
                         value_error, "deepen: IdMorph needs K1 = K = 3 (F1 is G), got K1 = 5");
  netmorph::dense_weights<TestType> d{tensor<TestType>({3, 4}), tensor<TestType>()};
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(d, with([](deepen_options& o) { o.k2 = 3; })),
                         value_error, "deepen: a dense layer has 1x1 kernels, got K1 = 0, K2 = 3");
  netmorph::dense_weights<TestType> d3{tensor<TestType>({3, 4, 1}), tensor<TestType>()};
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(d3), netmorph::shape_error,
                         "deepen: dense weight must be (out, in), got shape (3, 4, 1)");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(d, with([](deepen_options& o) {
                                            o.padding = netmorph::depth_padding::same;
                                          })),
                         value_error, "deepen: a dense layer has no padding to choose");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, with([](deepen_options& o) {
                                            o.padding = netmorph::depth_padding::same;
                                            o.k1 = 4;
                                            o.k2 = 2;
                                          })),
                         value_error,
                         "deepen: 'same' padding needs an odd K2 and padding + (K1 - K)/2 >= 0, "
                         "got K2 = 2, padding 1, K1 = 4, K = 3");
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, with([](deepen_options& o) {
                                            o.algorithm = depth_algorithm::idmorph;
                                            o.k2 = 2;
                                          })),
                         value_error,
                         "deepen: IdMorph needs an odd K2 for a centred identity, got 2");
  NM_REQUIRE_THROWS_WITH(
      netmorph::deepen(parent, with([](deepen_options& o) { o.probe.count = -1; })), value_error,
      "deepen: probe.count and probe.size must be >= 0, got -1 and 0");
}

TEMPLATE_TEST_CASE("deepen refuses a request far beyond memory with the size it would need",
                   "[depth][error]", float, double) {
  std::mt19937_64 rng(2);
  auto parent = nmtest::random_conv<TestType>(rng, 4, 3, 3, 1, 1, true);
  deepen_options opt;
  opt.mid_channels = idx(1) << 40;
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, opt), value_error,
                         "deepen: F1 of shape (1099511627776, 3, 3, 3) needs 2.4e+14 bytes");
  opt.mid_channels = 0;
  opt.k1 = idx(1) << 31;
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, opt), value_error,
                         "deepen: F1 of shape (4, 3, 2147483648, 2147483648) needs 4.4e+20 bytes");
  opt.k1 = 0;
  opt.k2 = (idx(1) << 31) + 1;
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(parent, opt), value_error,
                         "deepen: F2 of shape (4, 4, 2147483649, 2147483649) needs");
  netmorph::dense_weights<TestType> d{tensor<TestType>({3, 4}), tensor<TestType>()};
  opt = deepen_options{};
  opt.mid_channels = idx(1) << 40;
  NM_REQUIRE_THROWS_WITH(netmorph::deepen(d, opt), value_error,
                         "deepen: F1 of shape (1099511627776, 4, 1, 1) needs 3.5e+13 bytes");
}

TEMPLATE_TEST_CASE("deepen's result carries the P-activation and the optional identity batch norm",
                   "[depth]", float, double) {
  auto rng = nmtest::make_rng(54);
  const double tol = nmtest::exact_tolerance<TestType>();
  for (activation_kind kind : nmtest::all_activation_kinds()) {
    const idx c0 = draw(rng, 1, 4), c2 = draw(rng, 1, 4);
    CAPTURE(netmorph::to_string(kind), c0, c2);
    auto parent = nmtest::random_conv<TestType>(rng, c2, c0, 3, 1, 1, true);
    deepen_options opt;
    opt.phi = netmorph::activation_fn{kind, 0.1};
    opt.insert_batch_norm = true;
    opt.k2 = 3;
    opt.mid_channels = c2 + 1;
    opt.seed = rng();
    auto r = netmorph::deepen(parent, opt);
    REQUIRE(r.between.phi.kind == kind);
    REQUIRE(r.between.a == 1.0);
    REQUIRE(r.batch_norm);
    REQUIRE(r.batch_norm->channels() == c2 + 1);
    REQUIRE(double(r.batch_norm->gamma(0)) ==
            Approx(std::sqrt(1.0 + r.batch_norm->eps)).epsilon(tol));
    REQUIRE(nmtest::measured_error(r.report) <= tol);
    auto x = nmtest::randn<TestType>({2, c0, 7, 6}, rng);
    const auto y = netmorph::conv2d(x, parent);
    REQUIRE(netmorph::relative_error(netmorph::forward(x, r), y) <= tol);
    // forward applies first, batch norm, between, second: by hand with the P-activation at a
    // different a, the same composition.
    auto moved = r;
    moved.between = netmorph::make_p_activation(*opt.phi, 0.25);
    auto h = netmorph::batch_norm_inference(netmorph::conv2d(x, r.first), *r.batch_norm);
    auto by_hand = netmorph::conv2d(netmorph::apply(moved.between, std::move(h)), r.second);
    REQUIRE(netmorph::relative_error(netmorph::forward(x, moved), by_hand) <= tol);
  }
  deepen_options plain;
  auto parent = nmtest::random_conv<TestType>(rng, 2, 2, 3, 1, 1, true);
  auto r = netmorph::deepen(parent, plain);
  REQUIRE(r.between.phi.kind == activation_kind::relu);  // PReLU at weight level
  REQUIRE_FALSE(r.batch_norm);
}

#include "support/test_support.hpp"

using netmorph::conv2d_options;
using netmorph::conv2d_weights;
using nmtest::draw;
using nmtest::idx;

TEMPLATE_TEST_CASE("grow_kernel preserves the output at every pixel", "[kernel_size][property]",
                   float, double) {
  auto rng = nmtest::make_rng(70);
  for (int trial = 0; trial < 50; ++trial) {
    const idx c0 = draw(rng, 1, 4), c1 = draw(rng, 1, 4), k = draw(rng, 1, 5),
              grow = 2 * draw(rng, 0, 2), stride = draw(rng, 1, 2), pad = draw(rng, 0, 2);
    CAPTURE(trial, c0, c1, k, grow, stride, pad);
    conv2d_weights<TestType> layer{nmtest::randn<TestType>({c1, c0, k, k}, rng),
                                   nmtest::randn<TestType>({c1}, rng), conv2d_options{stride, pad}};
    netmorph::grow_kernel_options opt;
    opt.new_kernel = k + grow;
    opt.seed = rng();
    auto r = netmorph::grow_kernel(layer, opt);
    REQUIRE(r.layer.weight.shape() == netmorph::shape_type{c1, c0, k + grow, k + grow});
    REQUIRE(r.layer.options.padding == pad + grow / 2);
    REQUIRE(r.report.exact);
    REQUIRE(r.report.probes == opt.probe.count);
    REQUIRE(nmtest::measured_error(r.report) <= nmtest::exact_tolerance<TestType>());
    REQUIRE(nmtest::new_tensor(r.report, "layer").nonzero_fraction ==
            Approx(double(k * k) / double((k + grow) * (k + grow))));
    REQUIRE(r.report.kernel->old_kernel == k);
    REQUIRE(r.report.kernel->new_kernel == k + grow);
    const idx hw = std::max<idx>(1, k - 2 * pad) + draw(rng, 0, 5);
    auto x = nmtest::randn<TestType>({2, c0, hw, hw}, rng);
    REQUIRE(netmorph::relative_error(netmorph::conv2d(x, r.layer), netmorph::conv2d(x, layer)) <=
            nmtest::exact_tolerance<TestType>());
  }
}

TEMPLATE_TEST_CASE("grow_kernel rejects shrinking, odd growth and bad weights",
                   "[kernel_size][error]", float, double) {
  conv2d_weights<TestType> layer{netmorph::tensor<TestType>({2, 3, 3, 3}), {}, {}};
  auto to = [](idx k) {
    netmorph::grow_kernel_options o;
    o.new_kernel = k;
    return o;
  };
  NM_REQUIRE_THROWS_WITH(netmorph::grow_kernel(layer, to(1)), netmorph::value_error,
                         "grow_kernel: cannot shrink the kernel from 3 to 1");
  NM_REQUIRE_THROWS_WITH(netmorph::grow_kernel(layer, to(4)), netmorph::value_error,
                         "grow_kernel: growth from 3 to 4 is odd");
  NM_REQUIRE_THROWS_WITH(netmorph::grow_kernel(layer, to((idx(1) << 31) + 1)),
                         netmorph::value_error,
                         "grow_kernel: the grown weight of shape (2, 3, 2147483649, 2147483649) "
                         "needs");
  auto bad_probe = to(5);
  bad_probe.probe.count = -2;
  NM_REQUIRE_THROWS_WITH(netmorph::grow_kernel(layer, bad_probe), netmorph::value_error,
                         "grow_kernel: probe.count and probe.size must be >= 0, got -2 and 0");
  layer.weight(0, 0, 0, 0) = std::numeric_limits<TestType>::quiet_NaN();
  NM_REQUIRE_THROWS_WITH(netmorph::grow_kernel(layer, to(5)), netmorph::value_error,
                         "grow_kernel: weight holds nan at index (0, 0, 0, 0)");
  conv2d_weights<TestType> rect{netmorph::tensor<TestType>({2, 3, 3, 1}), {}, {}};
  NM_REQUIRE_THROWS_WITH(netmorph::grow_kernel(rect, to(5)), netmorph::shape_error,
                         "grow_kernel: kernel must be square, got 3x1");
}

#include "support/test_support.hpp"

#include <cmath>
#include <map>
#include <string>
#include <variant>

using netmorph::field_value;
using netmorph::morph_report;
using nmtest::idx;

namespace {

/// The fields of a report by key; fails the test on a repeated key.
std::map<std::string, field_value> by_key(const morph_report& r) {
  std::map<std::string, field_value> m;
  for (const auto& f : r.fields()) {
    INFO(f.key);
    REQUIRE(m.count(f.key) == 0);
    m[f.key] = f.value;
  }
  return m;
}

template <typename T>
T get(const std::map<std::string, field_value>& m, const std::string& key) {
  INFO(key);
  REQUIRE(m.count(key) == 1);
  REQUIRE(std::holds_alternative<T>(m.at(key)));
  return std::get<T>(m.at(key));
}

bool not_measured(const std::map<std::string, field_value>& m, const std::string& key) {
  return m.count(key) == 1 && std::holds_alternative<std::monostate>(m.at(key));
}

/// No double in the report is NaN or infinite.
void require_finite_fields(const morph_report& r) {
  for (const auto& f : r.fields())
    if (std::holds_alternative<double>(f.value)) {
      INFO(f.key);
      REQUIRE(std::isfinite(std::get<double>(f.value)));
    }
}

}  // namespace

TEST_CASE("field values print as documented", "[report]") {
  REQUIRE(netmorph::to_string(field_value{}) == "-");
  REQUIRE(netmorph::to_string(field_value{true}) == "true");
  REQUIRE(netmorph::to_string(field_value{false}) == "false");
  REQUIRE(netmorph::to_string(field_value{std::int64_t(42)}) == "42");
  REQUIRE(netmorph::to_string(field_value{0.000123456}) == "0.000123");
  REQUIRE(netmorph::to_string(field_value{std::string("F1")}) == "F1");
}

TEST_CASE("a deepen report lists its facts under stable keys, in order", "[report][depth]") {
  std::mt19937_64 rng(11);
  auto parent = nmtest::random_conv<double>(rng, 8, 8, 3, 1, 1, true);
  netmorph::deepen_options opt;
  opt.k1 = 3;
  opt.k2 = 3;  // Algorithm 2 shrinks K2 to 1 and pads it back
  opt.seed = rng();
  auto r = netmorph::deepen(parent, opt);
  const auto fields = r.report.fields();
  const std::vector<std::string> head{"operation",
                                      "layer",
                                      "new_layers",
                                      "algorithm",
                                      "exact",
                                      "relative_residual",
                                      "max_output_error",
                                      "relative_output_error",
                                      "probes",
                                      "seconds",
                                      "depth.c0"};
  REQUIRE(fields.size() > head.size());
  for (std::size_t i = 0; i < head.size(); ++i)
    REQUIRE(fields[i].key == head[i]);
  REQUIRE(fields.back().key == "notes");
  const auto m = by_key(r.report);
  REQUIRE(get<std::string>(m, "operation") == "deepen");
  REQUIRE(get<std::string>(m, "layer").empty());
  REQUIRE(get<std::string>(m, "algorithm") == "practical");
  REQUIRE(get<bool>(m, "exact"));
  REQUIRE(get<double>(m, "relative_residual") <= opt.tolerance);
  REQUIRE(get<double>(m, "relative_output_error") == *r.report.relative_output_error);
  REQUIRE(get<std::int64_t>(m, "probes") == 4);
  REQUIRE(get<std::int64_t>(m, "depth.c1") == 8);
  REQUIRE(get<std::int64_t>(m, "depth.k2") == 3);
  REQUIRE(get<std::int64_t>(m, "depth.solved_k2") == 1);
  REQUIRE_FALSE(get<bool>(m, "depth.condition7"));
  REQUIRE(get<bool>(m, "depth.one_step"));
  REQUIRE(get<std::string>(m, "tensor.F2.shape") == "(8, 8, 3, 3)");
  REQUIRE(get<double>(m, "tensor.F2.nonzero_fraction") == Approx(1.0 / 9.0));
  REQUIRE(get<double>(m, "tensor.F1.std") > 0);
  REQUIRE_THAT(get<std::string>(m, "notes"), Catch::Matchers::Contains("zero-padded to 3x3"));
  REQUIRE(m.count("width.old_channels") == 0);
  REQUIRE(m.count("steps.0.operation") == 0);
  require_finite_fields(r.report);
  const std::string s = r.report.summary();
  REQUIRE_THAT(s, Catch::Matchers::StartsWith("deepen: practical (Algorithm 2), exact\n"));
  REQUIRE_THAT(s, Catch::Matchers::Contains("solved at        K1 = 3, K2 = 1"));
  REQUIRE_THAT(s, Catch::Matchers::Contains("on 4 probe inputs"));
}

TEST_CASE("not measured is monostate in fields() and words in summary()", "[report]") {
  std::mt19937_64 rng(12);
  auto parent = nmtest::random_conv<double>(rng, 3, 2, 3, 1, 1, true);
  netmorph::deepen_options opt;
  opt.probe.count = 0;
  auto r = netmorph::deepen(parent, opt);
  REQUIRE_FALSE(r.report.max_output_error);
  REQUIRE_FALSE(r.report.relative_output_error);
  auto m = by_key(r.report);
  REQUIRE(not_measured(m, "max_output_error"));
  REQUIRE(not_measured(m, "relative_output_error"));
  REQUIRE(get<std::int64_t>(m, "probes") == 0);
  REQUIRE_THAT(r.report.summary(), Catch::Matchers::Contains("output error     not measured"));
  REQUIRE(netmorph::to_string(m.at("max_output_error")) == "-");
  require_finite_fields(r.report);

  // IdMorph: condition (7) and one_step mean nothing there, so they are not reported.
  opt.algorithm = netmorph::depth_algorithm::idmorph;
  auto id = netmorph::deepen(parent, opt);
  m = by_key(id.report);
  REQUIRE(get<std::string>(m, "algorithm") == "idmorph");
  REQUIRE(not_measured(m, "depth.condition7"));
  REQUIRE(not_measured(m, "depth.one_step"));

  // grow_kernel solves no equation: no residual.
  netmorph::grow_kernel_options g;
  g.new_kernel = 5;
  auto k = netmorph::grow_kernel(parent, g);
  m = by_key(k.report);
  REQUIRE(not_measured(m, "relative_residual"));
  REQUIRE(get<std::string>(m, "algorithm") == "zero_pad");
  REQUIRE(get<std::int64_t>(m, "kernel.old_kernel") == 3);
  REQUIRE(get<std::int64_t>(m, "kernel.new_kernel") == 5);
  REQUIRE(get<std::string>(m, "tensor.layer.shape") == "(3, 2, 5, 5)");
}

TEST_CASE("a widen report carries the width details", "[report][width]") {
  std::mt19937_64 rng(13);
  netmorph::dense_weights<double> layer{nmtest::randn<double>({3, 4}, rng),
                                        nmtest::randn<double>({3}, rng)};
  netmorph::dense_weights<double> next{nmtest::randn<double>({2, 3}, rng), {}};
  netmorph::widen_options opt;
  opt.new_channels = 5;
  opt.rule = netmorph::width_rule::net2net;
  opt.phi = netmorph::activation_fn{netmorph::activation_kind::tanh};
  auto r = netmorph::widen(layer, next, opt);
  const auto m = by_key(r.report);
  REQUIRE(get<std::string>(m, "operation") == "widen");
  REQUIRE(get<std::string>(m, "algorithm") == "net2net");
  REQUIRE(get<std::int64_t>(m, "width.old_channels") == 3);
  REQUIRE(get<std::int64_t>(m, "width.new_channels") == 5);
  REQUIRE(get<std::string>(m, "tensor.next.shape") == "(2, 5)");
  REQUIRE(not_measured(m, "relative_residual"));
  REQUIRE(get<double>(m, "relative_output_error") <= nmtest::exact_tolerance<double>());
  REQUIRE_THAT(r.report.summary(), Catch::Matchers::Contains("channels         3 -> 5"));
}

TEST_CASE("subnet reports flatten their steps recursively", "[report][subnet]") {
  std::mt19937_64 rng(14);
  auto parent = nmtest::random_conv<double>(rng, 2, 2, 3, 1, 1, true);
  netmorph::subnet_options o;
  o.widths = {3, 4};
  o.kernels = {3, 1, 1};
  o.step.seed = rng();
  auto r = netmorph::to_subnet(parent, o);
  auto m = by_key(r.report);
  REQUIRE(r.report.steps.size() == 2);
  REQUIRE(get<std::string>(m, "algorithm") == "repeated_depth");
  REQUIRE(get<std::int64_t>(m, "subnet.k_tilde") == 3);
  REQUIRE(get<std::string>(m, "steps.0.operation") == "deepen");
  REQUIRE(get<std::int64_t>(m, "steps.1.depth.c1") == 4);
  // The steps are not probed on their own: not measured, not NaN.
  REQUIRE(not_measured(m, "steps.0.relative_output_error"));
  REQUIRE(get<std::string>(m, "tensor.layer 2.shape") == "(2, 4, 1, 1)");
  REQUIRE_THAT(r.report.summary(), Catch::Matchers::Contains("step 1: deepen"));

  netmorph::stacked_subnet_options so;
  so.paths = {o, o};
  so.split = netmorph::split_kind::random_convex;
  so.seed = rng();
  auto s = netmorph::to_stacked_subnet(parent, so);
  m = by_key(s.report);
  REQUIRE(get<std::string>(m, "algorithm") == "split_random_convex");
  REQUIRE(get<double>(m, "subnet.split.0") + get<double>(m, "subnet.split.1") == Approx(1.0));
  REQUIRE(get<double>(m, "relative_residual") <= o.step.tolerance);
  REQUIRE(get<std::string>(m, "steps.1.operation") == "to_subnet");
  REQUIRE(get<std::int64_t>(m, "steps.1.steps.0.depth.c1") == 3);
  REQUIRE(get<std::string>(m, "tensor.path 1 layer 0.shape") == "(3, 2, 3, 3)");
  REQUIRE(get<std::int64_t>(m, "probes") == 4);
  require_finite_fields(s.report);
}

TEST_CASE("an output error that cannot be measured is never exact, and the report says why",
          "[report][width]") {
  // A finite weight of 3e38 overflows float in the forward pass: the probes' outputs are
  // infinite, their difference NaN. The report used to print "-nan" and call the morph exact.
  using netmorph::tensor;
  std::mt19937_64 rng(9);
  netmorph::dense_weights<float> layer{nmtest::randn<float>({3, 4}, rng),
                                       nmtest::randn<float>({3}, rng)};
  netmorph::dense_weights<float> next{nmtest::randn<float>({2, 3}, rng), {}};
  layer.weight(0, 0) = 3e38f;
  layer.weight(0, 1) = 3e38f;
  netmorph::widen_options opt;
  opt.new_channels = 5;
  opt.phi = netmorph::activation_fn{netmorph::activation_kind::identity};
  const auto r = netmorph::widen(layer, next, opt);
  REQUIRE_FALSE(r.report.exact);
  REQUIRE_FALSE(r.report.relative_output_error);
  REQUIRE_FALSE(r.report.max_output_error);
  REQUIRE_THAT(r.report.notes.at(0), Catch::Matchers::Contains("infinity or a NaN"));
  const auto m = by_key(r.report);
  REQUIRE_FALSE(get<bool>(m, "exact"));
  REQUIRE(std::holds_alternative<std::monostate>(m.at("relative_output_error")));
  REQUIRE_THAT(r.report.summary(), !Catch::Matchers::Contains("nan"));
  const auto verdict = netmorph::judge_exactness<float>(r.report);
  REQUIRE_FALSE(verdict.exact);
  REQUIRE_THAT(verdict.why, Catch::Matchers::Contains("on the 4 probe inputs cannot be measured") &&
                                Catch::Matchers::Contains("infinity or a NaN"));
  // The same morph on ordinary weights is exact; an error above the tolerance is not, in words.
  layer.weight(0, 0) = layer.weight(0, 1) = 0.5f;
  auto ok = netmorph::widen(layer, next, opt).report;
  REQUIRE(netmorph::judge_exactness<float>(ok).exact);
  ok.relative_output_error = 2e-4;
  REQUIRE_THAT(netmorph::judge_exactness<float>(ok).why,
               Catch::Matchers::Contains("above the tolerance 0.0001"));
  REQUIRE_FALSE(netmorph::judge_exactness<double>(ok).exact);
}

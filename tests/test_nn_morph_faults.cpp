// The strong exception guarantee of the model morphs, for every exception: a failure injected
// at every allocation of a morph (its options, solve, replacement and probe stages) leaves the
// model exactly as it was. This file replaces the global operator new (except under
// AddressSanitizer) so that the standard containers' allocations fail on cue as well as the
// tensors'.

// The replacement below pairs malloc with free; GCC cannot see that it replaces both halves.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "support/nn_support.hpp"

#include <netmorph/nn.hpp>

#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

// AddressSanitizer keeps its own operator new and checks that what it allocated is freed by its
// operator delete, which a replacement cannot honour for memory allocated before it is seen (the
// C++ runtime's own); under it only tensor allocations fail on cue, and the sanitizer checks the
// restore paths' memory instead.
#if !defined(__SANITIZE_ADDRESS__)
void* operator new(std::size_t n) {
  netmorph::detail::count_allocation();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
#endif

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::tensor;
using nmtest::state_of;
namespace nn = netmorph::nn;

namespace {

/// Everything a morph may touch, for exact comparisons: names, notation, every parameter's value,
/// gradient and velocity, and the output in inference mode (which reads the batch-norm buffers
/// and the P-activations).
struct snapshot {
  std::vector<std::string> names;
  netmorph::shape_type output_shape;
  std::string notation;
  std::vector<tensor<double>> state;
  tensor<double> output;

  snapshot(nn::model<double>& m, const tensor<double>& x)
      : names(m.names()),
        output_shape(m.output_shape()),
        notation(nn::to_notation(m)),
        state(state_of(m)),
        output(m.forward(x, false)) {}
  bool operator==(const snapshot& o) const {
    return names == o.names && output_shape == o.output_shape && notation == o.notation &&
           state == o.state && output == o.output;
  }
};

/// Runs `morph` with its k-th allocation failing, for k = 0, 1, 2, ... until it succeeds; after
/// each failure the model must be exactly as before. Returns the failures seen.
template <typename Morph>
int fail_every_allocation(Morph&& morph) {
  auto m = nmtest::trained_block_model();
  std::mt19937_64 rng(5);
  const tensor<double> x = nmtest::randn<double>({4, 1, 8, 8}, rng);
  const snapshot before(m, x);
  int failures = 0;
  for (std::int64_t k = 0;; ++k) {
    CAPTURE(k);
    bool failed = false;
    netmorph::detail::allocation_failure_countdown = k;
    try {
      morph(m);
    } catch (const std::bad_alloc&) {
      failed = true;
    }
    netmorph::detail::allocation_failure_countdown = -1;
    if (!failed) break;
    ++failures;
    const snapshot now(m, x);
    REQUIRE(now == before);
    // The model's name index was restored too: every parent name is taken, a child name free.
    for (const std::string& n : {std::string("4"), std::string("0")})
      REQUIRE_THROWS_AS(nn::model<double>(m).add(nn::flatten<double>(), n), netmorph::value_error);
    nn::model<double>(m).add(nn::flatten<double>(), "4.1");
  }
  // The morph succeeded in the end, and its child computes the parent's function.
  REQUIRE(netmorph::relative_error(m.forward(x, false), before.output) <=
          nmtest::exact_tolerance<double>());
  return failures;
}

}  // namespace

TEST_CASE("a model morph that runs out of memory at any allocation leaves the model as it was",
          "[nn][morph][error]") {
  SECTION("deepen") {
    netmorph::deepen_options d;
    d.probe.count = 4;
    REQUIRE(fail_every_allocation([&](auto& m) { return nn::deepen(m, "4", d); }) > 20);
  }
  SECTION("deepen inside a parallel path") {
    netmorph::deepen_options d;
    d.probe.count = 4;
    REQUIRE(fail_every_allocation([&](auto& m) { return nn::deepen(m, "res.path0.0", d); }) > 20);
  }
  SECTION("widen, both rules") {
    for (const auto rule : {netmorph::width_rule::netmorph, netmorph::width_rule::net2net}) {
      netmorph::widen_options w;
      w.new_channels = 9;
      w.rule = rule;
      w.probe.count = 4;
      REQUIRE(fail_every_allocation([&](auto& m) { return nn::widen(m, "0", w); }) > 20);
    }
  }
  SECTION("grow_kernel") {
    netmorph::grow_kernel_options g;
    g.new_kernel = 5;
    g.probe.count = 4;
    REQUIRE(fail_every_allocation([&](auto& m) { return nn::grow_kernel(m, "4", g); }) > 20);
  }
  SECTION("to_subnet") {
    netmorph::subnet_options so;
    so.kernels = {3, 1, 1};
    so.widths = {6, 6};
    so.step.probe.count = 4;
    REQUIRE(fail_every_allocation([&](auto& m) { return nn::to_subnet(m, "4", so); }) > 20);
  }
  SECTION("to_stacked_subnet") {
    netmorph::stacked_subnet_options st;
    netmorph::subnet_options a, b;
    a.kernels = {3, 1};
    a.widths = {6};
    b.kernels = {1, 3};
    b.widths = {6};
    st.paths = {a, b};
    st.probe.count = 4;
    REQUIRE(fail_every_allocation([&](auto& m) { return nn::to_stacked_subnet(m, "4", st); }) > 20);
  }
}

TEST_CASE("a widen whose probe is too large to allocate leaves the model as it was",
          "[nn][morph][error]") {
  // conv(1->1, 1x1) -> relu -> conv(1->1, 1x1) on 1x8x8: a million new channels fit, but 512
  // probes through them do not (3.4e10 values); the probe fails after the swap.
  std::mt19937_64 rng(1);
  nn::model<double> m({1, 8, 8});
  m.add(nn::conv2d<double>(nmtest::randn<double>({1, 1, 1, 1}, rng),
                           nmtest::randn<double>({1}, rng), {}));
  m.add(nn::activation<double>(activation_fn{activation_kind::relu}));
  m.add(nn::conv2d<double>(nmtest::randn<double>({1, 1, 1, 1}, rng),
                           nmtest::randn<double>({1}, rng), {}));
  const auto data_x = nmtest::randn<double>({2, 1, 8, 8}, rng);
  m.forward(data_x, true);
  m.backward(nmtest::randn<double>({2, 1, 8, 8}, rng));
  nn::sgd{0.1, 0.9, 0.0}.step(m);
  const snapshot before(m, data_x);
  netmorph::widen_options w;
  w.new_channels = netmorph::index_type(1) << 20;
  w.probe.count = 512;
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "0", w), netmorph::value_error, "1048576");
  REQUIRE(snapshot(m, data_x) == before);
  REQUIRE(nn::to_notation(m) == "[(1:1x2)]");
}

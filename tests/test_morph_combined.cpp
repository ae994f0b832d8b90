#include "support/test_support.hpp"

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::conv2d_options;
using netmorph::conv2d_weights;
using netmorph::tensor;
using nmtest::draw;
using nmtest::idx;

namespace {

/// x -> layers[0] -> act[0] -> layers[1] -> act[1] -> ...: `act[j]` follows layer j (none after
/// the last). P-activations at a = 1 are what the morphs insert between new layers.
template <typename Scalar>
tensor<Scalar> run(tensor<Scalar> x, const std::vector<conv2d_weights<Scalar>>& layers,
                   const std::vector<netmorph::p_activation_fn>& acts) {
  for (std::size_t j = 0; j < layers.size(); ++j) {
    x = netmorph::conv2d(x, layers[j]);
    if (j < acts.size()) x = netmorph::apply(acts[j], std::move(x));
  }
  return x;
}

}  // namespace

TEMPLATE_TEST_CASE("a chain of morphs on a two-layer network preserves it for every activation",
                   "[combined][property]", float, double) {
  auto rng = nmtest::make_rng(100);
  const double tol = nmtest::exact_tolerance<TestType>();
  int trial = 0;
  for (activation_kind kind : nmtest::all_activation_kinds()) {
    for (int rep = 0; rep < 3; ++rep, ++trial) {
      const activation_fn phi{kind, 0.1};
      const idx c0 = draw(rng, 1, 3), c1 = draw(rng, 2, 4), c2 = draw(rng, 1, 3);
      CAPTURE(netmorph::to_string(kind), trial, c0, c1, c2);
      // Parent: conv 3x3 (c0 -> c1) -> phi -> conv 3x3 (c1 -> c2).
      std::vector<conv2d_weights<TestType>> net{
          {nmtest::randn<TestType>({c1, c0, 3, 3}, rng, 0.5), nmtest::randn<TestType>({c1}, rng),
           conv2d_options{1, 1}},
          {nmtest::randn<TestType>({c2, c1, 3, 3}, rng, 0.5), nmtest::randn<TestType>({c2}, rng),
           conv2d_options{1, 1}}};
      std::vector<netmorph::p_activation_fn> acts{netmorph::make_p_activation(phi, 0.0)};
      auto x = nmtest::randn<TestType>({2, c0, 8, 8}, rng);
      const auto y = run(x, net, acts);

      // 1. Combined depth + width + kernel size: layer 0 becomes (3c1 channels, 5x5) then 3x3,
      //    with a P-activation at a = 1 between them (K~ = 7 > 3).
      netmorph::deepen_options d;
      d.mid_channels = 3 * c1 + 30;
      d.k1 = 5;
      d.k2 = 3;
      d.seed = rng();
      d.phi = phi;
      auto dr = netmorph::deepen(net[0], d);
      CAPTURE(dr.report.summary());
      net = {dr.first, dr.second, net[1]};
      acts = {dr.between, acts[0]};
      REQUIRE(netmorph::relative_error(run(x, net, acts), y) <= tol);

      // 2. Widen the new inner layer (its next layer is the second child, identity between).
      netmorph::widen_options w;
      w.new_channels = net[0].weight.dim(0) + 3;
      w.phi = activation_fn{activation_kind::identity};
      w.seed = rng();
      auto wr = netmorph::widen(net[0], net[1], w);
      net[0] = wr.layer;
      net[1] = wr.next;
      REQUIRE(netmorph::relative_error(run(x, net, acts), y) <= tol);

      // 3. Widen the parent's first layer output (through phi) into the old second layer.
      netmorph::widen_options w2;
      w2.new_channels = net[1].weight.dim(0) + 2;
      w2.phi = phi;
      w2.seed = rng();
      auto wr2 = netmorph::widen(net[1], net[2], w2);
      net[1] = wr2.layer;
      net[2] = wr2.next;
      REQUIRE(netmorph::relative_error(run(x, net, acts), y) <= tol);

      // 4. Grow the last layer's kernel.
      netmorph::grow_kernel_options g;
      g.new_kernel = 5;
      net[2] = netmorph::grow_kernel(net[2], g).layer;
      REQUIRE(netmorph::relative_error(run(x, net, acts), y) <= tol);

      // 5. Turn the last layer into a 3-layer sequential subnet, then widen its inner layer.
      netmorph::subnet_options so;
      so.kernels = {5, 1, 1};
      so.widths = {net[2].weight.dim(0) + 1, net[2].weight.dim(0) + 2};
      so.step.seed = rng();
      so.step.phi = phi;
      auto sr = netmorph::to_subnet(net[2], so);
      auto& sub = sr.chain.layers;
      netmorph::widen_options w3;
      w3.new_channels = sub[1].weight.dim(0) + 4;
      w3.phi = activation_fn{activation_kind::identity};
      w3.seed = rng();
      auto wr3 = netmorph::widen(sub[1], sub[2], w3);
      sub[1] = wr3.layer;
      sub[2] = wr3.next;
      net.pop_back();
      for (auto& l : sub)
        net.push_back(l);
      for (const auto& b : sr.chain.between)
        acts.push_back(b);
      REQUIRE(net.size() == 5);
      REQUIRE(netmorph::relative_error(run(x, net, acts), y) <= tol);
    }
  }
}

// Grouped and depthwise convolutions in a model: training, the model morphs, the refusals.
#include "support/nn_support.hpp"

#include <netmorph/nn.hpp>

#include <string>
#include <vector>

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::conv2d_options;
using netmorph::tensor;
using nmtest::idx;
using nmtest::state_of;
using nmtest::synthetic;
namespace nn = netmorph::nn;

namespace {

/// A MobileNet-style model on 1x8x8: conv 1->8, batch norm, ReLU6-free ReLU, a depthwise 3x3
/// ("dw", groups 8), batch norm, ReLU, a grouped 1x1 ("gpw", 8->6 in 2 groups), ReLU, a flatten
/// and a dense head of 3 classes; biases on every convolution but the depthwise one.
template <typename Scalar>
nn::model<Scalar> mobile_model(std::mt19937_64& rng) {
  nn::model<Scalar> m({1, 8, 8}, 5);
  const activation_fn relu{activation_kind::relu};
  m.add(nn::conv2d<Scalar>(nmtest::randn<Scalar>({8, 1, 3, 3}, rng),
                           nmtest::randn<Scalar>({8}, rng), conv2d_options{1, 1}),
        "stem");
  m.add(nn::batch_norm<Scalar>(netmorph::batch_norm_weights<Scalar>::identity(8)), "stem_bn");
  m.add(nn::activation<Scalar>(relu));
  m.add(nn::conv2d<Scalar>(nmtest::randn<Scalar>({8, 1, 3, 3}, rng), tensor<Scalar>(),
                           conv2d_options{1, 1, 8}),
        "dw");
  m.add(nn::batch_norm<Scalar>(netmorph::batch_norm_weights<Scalar>::identity(8)), "dw_bn");
  m.add(nn::activation<Scalar>(relu));
  m.add(nn::conv2d<Scalar>(nmtest::randn<Scalar>({6, 4, 1, 1}, rng),
                           nmtest::randn<Scalar>({6}, rng), conv2d_options{1, 0, 2}),
        "gpw");
  m.add(nn::activation<Scalar>(relu));
  m.add(nn::flatten<Scalar>());
  m.add(nn::dense<Scalar>(nmtest::randn<Scalar>({3, 6 * 8 * 8}, rng, 0.05),
                          nmtest::randn<Scalar>({3}, rng)),
        "fc");
  return m;
}

}  // namespace

TEST_CASE("a model with depthwise and grouped convolutions trains", "[nn][groups]") {
  std::mt19937_64 rng(90);
  const auto data = synthetic<double>(48, rng);
  auto m = mobile_model<double>(rng);
  REQUIRE(m.find("dw").describe() == "conv2d 8->8 3x3 stride 1 padding 1 groups 8 no bias");
  const double before = nn::evaluate(m, data, 16).loss;
  for (int epoch = 0; epoch < 8; ++epoch)
    nn::train_epoch(m, data, nn::sgd{0.02, 0.9, 0}, 8);
  REQUIRE(nn::evaluate(m, data, 16).loss < 0.7 * before);
}

TEMPLATE_TEST_CASE(
    "nn::deepen and nn::grow_kernel of a depthwise and a grouped layer keep the "
    "function",
    "[nn][morph][groups]", float, double) {
  std::mt19937_64 rng(91);
  const auto data = synthetic<TestType>(16, rng);
  auto m = mobile_model<TestType>(rng);
  nn::train_epoch(m, data, nn::sgd{0.02, 0.9, 0}, 8);  // moved weights, statistics, velocities
  const auto x = nmtest::randn<TestType>({3, 1, 8, 8}, rng);
  const auto y = m.forward(x, false);
  const double tol = nmtest::exact_tolerance<TestType>();
  const auto fc_velocity = m.find("fc").parameters()[0]->velocity;

  netmorph::deepen_options d;
  d.seed = 7;
  const auto r = nn::deepen(m, "dw", d);
  CAPTURE(r.summary());
  REQUIRE(*r.relative_output_error <= tol);
  REQUIRE(netmorph::relative_error(m.forward(x, false), y) <= tol);
  const auto* first = nn::layer_cast<nn::conv2d>(&m.find("dw.0"));
  REQUIRE(first != nullptr);
  REQUIRE(first->groups() == 8);
  // The P-activation between the children is the model's ReLU at a = 1.
  const auto* p = nn::layer_cast<nn::p_activation>(&m.find("dw.1"));
  REQUIRE(p != nullptr);
  REQUIRE(p->fn().phi.kind == activation_kind::relu);

  d.mid_channels = 8;
  REQUIRE(*nn::deepen(m, "gpw", d).relative_output_error <= tol);
  REQUIRE(netmorph::relative_error(m.forward(x, false), y) <= tol);

  netmorph::grow_kernel_options g;
  g.new_kernel = 5;
  REQUIRE(*nn::grow_kernel(m, "dw.0", g).relative_output_error <= tol);
  REQUIRE(netmorph::relative_error(m.forward(x, false), y) <= tol);
  // A layer no morph touched keeps its velocity bit for bit, and the child trains on.
  REQUIRE(m.find("fc").parameters()[0]->velocity == fc_velocity);
  nn::train_epoch(m, data, nn::sgd{0.02, 0.9, 0}, 8);
}

TEST_CASE(
    "nn::widen and nn::to_subnet refuse grouped (not depthwise) layers and leave the model as it "
    "was",
    "[nn][morph][groups][error]") {
  std::mt19937_64 rng(92);
  const auto data = synthetic<double>(16, rng);
  auto m = mobile_model<double>(rng);
  nn::train_epoch(m, data, nn::sgd{0.02, 0.9, 0}, 8);
  const auto names = m.names();
  const auto before = state_of(m);
  netmorph::widen_options w;
  w.new_channels = 10;
  // The stem's channels flow through the depthwise layer into the grouped 1x1, which mixes them
  // in groups.
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "stem", w), netmorph::value_error,
                         "nn::widen: layer 'gpw' (conv2d 8->6 1x1 stride 1 padding 0 groups 2) "
                         "reads the channels of layer 'stem' and mixes them in groups");
  w.new_channels = 8;
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "gpw", w), netmorph::value_error,
                         "nn::widen: layer 'gpw' (conv2d 8->6 1x1 stride 1 padding 0 groups 2) "
                         "mixes channels in groups");
  netmorph::subnet_options s;
  s.widths = {8};
  s.kernels = {3, 1};
  NM_REQUIRE_THROWS_WITH(nn::to_subnet(m, "dw", s), netmorph::value_error,
                         "to_subnet: the parent is a grouped convolution (groups = 8)");
  REQUIRE(m.names() == names);
  const auto now = state_of(m);
  REQUIRE(now.size() == before.size());
  for (std::size_t i = 0; i < now.size(); ++i)
    REQUIRE(now[i] == before[i]);
}

// Channel groups (docs/DESIGN.md §8.5): which layers grow together, and nn::widen on residual
// stages, bottleneck blocks and inverted-residual blocks, exact for both width rules.
#include "support/channel_support.hpp"

#include <netmorph/nn.hpp>

#include <string>
#include <utility>
#include <vector>

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::conv2d_options;
using netmorph::tensor;
using nmtest::draw;
using nmtest::idx;
using nmtest::state_of;
namespace nn = netmorph::nn;

using nmtest::add_block;
using nmtest::bn;
using nmtest::conv;
using nmtest::path;
using nmtest::relu;
using nmtest::require_exact_widen;
using nmtest::roles;

namespace {

/// A ResNet stage: a stem (c), a basic block with an identity shortcut, a basic block with a
/// strided 1x1 downsample to c2 channels, and a head (average pooling, flatten, dense).
template <typename Scalar>
nn::model<Scalar> resnet_stage(std::mt19937_64& rng, idx c, idx c2, idx k) {
  nn::model<Scalar> m({2, 8, 8}, 3);
  m.add(conv<Scalar>(2, c, 3, rng, 1, false), "stem");
  m.add(bn<Scalar>(c, rng), "stem_bn");
  m.add(relu<Scalar>(), "stem_relu");
  add_block(m, "b1",
            path<Scalar>(conv<Scalar>(c, c, k, rng, 1, false), bn<Scalar>(c, rng), relu<Scalar>(),
                         conv<Scalar>(c, c, k, rng, 1, false), bn<Scalar>(c, rng)),
            nn::layer_list<Scalar>());
  m.add(relu<Scalar>(), "b1_relu");
  add_block(m, "b2",
            path<Scalar>(conv<Scalar>(c, c2, k, rng, 2, false), bn<Scalar>(c2, rng), relu<Scalar>(),
                         conv<Scalar>(c2, c2, k, rng, 1, false), bn<Scalar>(c2, rng)),
            path<Scalar>(conv<Scalar>(c, c2, 1, rng, 2, false), bn<Scalar>(c2, rng)));
  m.add(relu<Scalar>(), "b2_relu");
  m.add(nn::adaptive_pool2d<Scalar>(2, 2), "pool");
  m.add(nn::flatten<Scalar>(), "flat");
  m.add(nn::dense<Scalar>(nmtest::randn<Scalar>({3, c2 * 4}, rng, 0.3),
                          nmtest::randn<Scalar>({3}, rng)),
        "fc");
  return m;
}

/// A bottleneck block (1x1 reduce, 3x3, 1x1 expand, each with batch norm) with a projection
/// shortcut, after a stem and before a head.
template <typename Scalar>
nn::model<Scalar> bottleneck(std::mt19937_64& rng, idx c, idx mid, idx out) {
  nn::model<Scalar> m({2, 6, 6}, 4);
  m.add(conv<Scalar>(2, c, 3, rng), "stem");
  m.add(relu<Scalar>(), "stem_relu");
  add_block(
      m, "neck",
      path<Scalar>(conv<Scalar>(c, mid, 1, rng, 1, false), bn<Scalar>(mid, rng), relu<Scalar>(),
                   conv<Scalar>(mid, mid, 3, rng, 1, false), bn<Scalar>(mid, rng), relu<Scalar>(),
                   conv<Scalar>(mid, out, 1, rng, 1, false), bn<Scalar>(out, rng)),
      path<Scalar>(conv<Scalar>(c, out, 1, rng, 1, false), bn<Scalar>(out, rng)));
  m.add(relu<Scalar>(), "neck_relu");
  m.add(conv<Scalar>(out, 3, 3, rng), "head");
  m.add(nn::flatten<Scalar>(), "flat");
  return m;
}

/// An inverted-residual block (MobileNetV2): expand 1x1, depthwise 3x3, project 1x1, each with
/// batch norm, with or without the residual sum; a stem before it and a 1x1 head after it.
template <typename Scalar>
nn::model<Scalar> inverted_residual(std::mt19937_64& rng, idx c, idx t, bool residual) {
  nn::model<Scalar> m({2, 6, 6}, 5);
  m.add(conv<Scalar>(2, c, 3, rng), "stem");
  m.add(relu<Scalar>(), "stem_relu");
  const idx e = c * t;
  auto body =
      path<Scalar>(conv<Scalar>(c, e, 1, rng, 1, false), bn<Scalar>(e, rng), relu<Scalar>(),
                   conv<Scalar>(e, e, 3, rng, 1, false, e), bn<Scalar>(e, rng), relu<Scalar>(),
                   conv<Scalar>(e, c, 1, rng, 1, false), bn<Scalar>(c, rng));
  if (residual) {
    add_block(m, "ir", std::move(body), nn::layer_list<Scalar>());
  } else {
    for (std::size_t j = 0; j < body.size(); ++j)
      nn::visit(*body[j], [&](auto& l) { m.add(l, "ir.body." + std::to_string(j)); });
  }
  m.add(conv<Scalar>(c, 3, 1, rng), "head");
  m.add(nn::flatten<Scalar>(), "flat");
  return m;
}

}  // namespace

TEST_CASE("channel_group_of finds every layer of a residual stage's stream", "[nn][channels]") {
  std::mt19937_64 rng(100);
  const auto m = resnet_stage<double>(rng, 4, 6, 3);
  // The stem's channels: the stem writes them, its batch norm and the first block's body carry
  // them back to the sum; the first block's conv and the second block's convs read them.
  CHECK(roles(nn::channel_group_of(m, "stem")) ==
        std::vector<std::string>{"stem:producer", "stem_bn:through", "b1.body.0:consumer",
                                 "b1.body.3:producer", "b1.body.4:through", "b2.body.0:consumer",
                                 "b2.skip.0:consumer"});
  CHECK(nn::channel_group_of(m, "b1.body.3").members.size() == 7);  // the same group
  // The second block's output: its body's last conv and the downsample, read by the dense head
  // after pooling to 2x2 and a flatten (4 columns per channel).
  const auto g = nn::channel_group_of(m, "b2.skip.0");
  CHECK(roles(g) == std::vector<std::string>{"b2.body.3:producer", "b2.body.4:through",
                                             "b2.skip.0:producer", "b2.skip.1:through",
                                             "fc:consumer"});
  CHECK(g.channels == 6);
  CHECK(g.members.back().span == 4);
  // Inside a block: the body's first conv feeds only the second.
  CHECK(roles(nn::channel_group_of(m, "b1.body.0")) ==
        std::vector<std::string>{"b1.body.0:producer", "b1.body.1:through", "b1.body.3:consumer"});
}

TEMPLATE_TEST_CASE("nn::widen of a residual stage's stream is exact on random shapes",
                   "[nn][channels][width][property]", float, double) {
  auto rng = nmtest::make_rng(101);
  for (int trial = 0; trial < 6; ++trial) {
    const idx c = draw(rng, 2, 5), c2 = draw(rng, 2, 6), k = 2 * draw(rng, 0, 1) + 1;
    CAPTURE(trial, c, c2, k);
    const auto m = resnet_stage<TestType>(rng, c, c2, k);
    require_exact_widen(m, "stem", draw(rng, 1, 4), rng);
    require_exact_widen(m, "b1.body.0", draw(rng, 1, 4), rng);
    require_exact_widen(m, "b2.body.3", draw(rng, 1, 4), rng);
  }
}

TEMPLATE_TEST_CASE("nn::widen of a bottleneck block's output and of its inner layers is exact",
                   "[nn][channels][width][property]", float, double) {
  auto rng = nmtest::make_rng(102);
  for (int trial = 0; trial < 6; ++trial) {
    const idx c = draw(rng, 2, 4), mid = draw(rng, 1, 3), out = draw(rng, 3, 6);
    CAPTURE(trial, c, mid, out);
    const auto m = bottleneck<TestType>(rng, c, mid, out);
    // The block's output: the expand conv and the projection shortcut grow together.
    CHECK(roles(nn::channel_group_of(m, "neck.body.6")) ==
          std::vector<std::string>{"neck.body.6:producer", "neck.body.7:through",
                                   "neck.skip.0:producer", "neck.skip.1:through", "head:consumer"});
    require_exact_widen(m, "neck.body.6", draw(rng, 1, 4), rng);
    require_exact_widen(m, "stem", draw(rng, 1, 4), rng);
    require_exact_widen(m, "neck.body.3", draw(rng, 1, 4), rng);
  }
}

TEMPLATE_TEST_CASE("nn::widen of an inverted-residual block grows the depthwise filters with it",
                   "[nn][channels][width][groups][property]", float, double) {
  auto rng = nmtest::make_rng(103);
  for (int trial = 0; trial < 6; ++trial) {
    const bool residual = trial % 2 == 0;
    const idx c = draw(rng, 2, 4), t = draw(rng, 2, 3);
    CAPTURE(trial, residual, c, t);
    const auto m = inverted_residual<TestType>(rng, c, t, residual);
    // The expansion: the depthwise layer and its batch norm carry the channels to the project.
    CHECK(roles(nn::channel_group_of(m, "ir.body.0")) ==
          std::vector<std::string>{"ir.body.0:producer", "ir.body.1:through", "ir.body.3:through",
                                   "ir.body.4:through", "ir.body.6:consumer"});
    require_exact_widen(m, "ir.body.0", draw(rng, 1, 4), rng);
    require_exact_widen(m, "ir.body.3", draw(rng, 1, 4), rng);  // the depthwise layer itself
    require_exact_widen(m, "ir.body.6", draw(rng, 1, 4), rng);  // the block's output
    nn::model<TestType> grown = m;
    netmorph::widen_options w;
    w.new_channels = c * t + 2;
    nn::widen(grown, "ir.body.0", w);
    const auto* dw = nn::layer_cast<nn::conv2d>(&grown.find("ir.body.3"));
    REQUIRE(dw->groups() == c * t + 2);
    REQUIRE(dw->weight().value.shape() == netmorph::shape_type{c * t + 2, 1, 3, 3});
  }
}

TEST_CASE(
    "nn::widen of a group keeps every old channel in place without a permutation, carries "
    "the velocities, and the child trains",
    "[nn][channels][width]") {
  std::mt19937_64 rng(104);
  auto m = resnet_stage<double>(rng, 3, 4, 3);
  nn::dataset<double> d{nmtest::randn<double>({12, 2, 8, 8}, rng), {}};
  for (int i = 0; i < 12; ++i)
    d.labels.push_back(i % 3);
  nn::train_epoch(m, d, nn::sgd{0.02, 0.9, 0}, 4);
  const auto before = m;
  netmorph::widen_options w;
  w.new_channels = 5;
  w.permute = false;
  const auto r = nn::widen(m, "stem", w);
  REQUIRE(r.new_layers == std::vector<std::string>{"stem", "stem_bn", "b1.body.0", "b1.body.3",
                                                   "b1.body.4", "b2.body.0", "b2.skip.0"});
  // Every changed tensor is listed.
  REQUIRE(r.new_tensors.size() == 1 + 4 + 1 + 1 + 4 + 1 + 1);
  auto& old_m = const_cast<nn::model<double>&>(before);
  for (const std::string& name : r.new_layers) {
    const auto ps = m.find(name).parameters(), old_ps = old_m.find(name).parameters();
    for (std::size_t i = 0; i < ps.size(); ++i) {
      const tensor<double>& v = ps[i]->velocity;
      const tensor<double>& ov = old_ps[i]->velocity;
      CAPTURE(name, ps[i]->name);
      // The old channels' values and velocities come first, bit for bit (rows, or the first
      // columns of each row of a consumer).
      const idx rows = ov.dim(0), row = ov.size() / rows, new_row = v.size() / v.dim(0);
      for (idx q = 0; q < rows; ++q)
        for (idx k = 0; k < row; ++k) {
          const idx at = v.dim(0) == rows ? q * new_row + k : q * row + k;
          REQUIRE(v.data()[at] == ov.data()[q * row + k]);
          REQUIRE(ps[i]->value.data()[at] == old_ps[i]->value.data()[q * row + k]);
        }
    }
  }
  const double loss = nn::evaluate(m, d).loss;
  for (int e = 0; e < 4; ++e)
    nn::train_epoch(m, d, nn::sgd{0.02, 0.9, 0}, 4);
  REQUIRE(nn::evaluate(m, d).loss < loss);
}

TEST_CASE("nn::widen refuses a group a grouped convolution mixes, and leaves the model as it was",
          "[nn][channels][width][error]") {
  std::mt19937_64 rng(105);
  nn::model<double> m({2, 6, 6});
  m.add(conv<double>(2, 4, 3, rng), "a");
  m.add(conv<double>(4, 6, 3, rng, 1, true, 2), "grouped");
  m.add(conv<double>(6, 2, 3, rng), "b");
  const auto names = m.names();
  const auto before = state_of(m);
  netmorph::widen_options w;
  w.new_channels = 6;
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "a", w), netmorph::value_error,
                         "nn::widen: layer 'grouped' (conv2d 4->6 3x3 stride 1 padding 1 groups "
                         "2) reads the channels of layer 'a' and mixes them in groups");
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "grouped", w), netmorph::value_error,
                         "nn::widen: layer 'grouped' (conv2d 4->6 3x3 stride 1 padding 1 groups "
                         "2) mixes channels in groups");
  NM_REQUIRE_THROWS_WITH(nn::channel_group_of(m, "nothing"), netmorph::value_error,
                         "nn::channel_group_of: no layer named 'nothing'");
  REQUIRE(m.names() == names);
  const auto now = state_of(m);
  for (std::size_t i = 0; i < now.size(); ++i)
    REQUIRE(now[i] == before[i]);
}

TEMPLATE_TEST_CASE(
    "nn::widen through a flatten's features: a batch norm and a residual dense "
    "layer over them grow H*W entries per channel",
    "[nn][channels][width]", float, double) {
  std::mt19937_64 rng(106);
  // conv 3->4 on 2x2 (16 features after the flatten), a batch norm over the 16 features, a
  // residual dense layer 16->16 summed with them, and a dense head.
  nn::model<TestType> m({3, 2, 2}, 6);
  m.add(conv<TestType>(3, 4, 3, rng), "conv");
  m.add(nn::flatten<TestType>(), "flat");
  m.add(bn<TestType>(16, rng), "bn");
  add_block(m, "res",
            path<TestType>(nn::dense<TestType>(nmtest::randn<TestType>({16, 16}, rng, 0.3),
                                               nmtest::randn<TestType>({16}, rng))),
            nn::layer_list<TestType>());
  m.add(nn::dense<TestType>(nmtest::randn<TestType>({5, 16}, rng, 0.3), tensor<TestType>()),
        "head");
  CHECK(roles(nn::channel_group_of(m, "conv")) ==
        std::vector<std::string>{"conv:producer", "bn:through", "res.body.0:consumer",
                                 "res.body.0:producer", "head:consumer"});
  require_exact_widen(m, "conv", 2, rng);
  nn::model<TestType> grown = m;
  netmorph::widen_options w;
  w.new_channels = 6;
  nn::widen(grown, "conv", w);
  REQUIRE(nn::layer_cast<nn::batch_norm>(&grown.find("bn"))->gamma().value.size() == 24);
  REQUIRE(grown.find("res.body.0").describe() == "dense 24->24");
  // The residual dense layer writes features, not channels: the conv is what to widen.
  const auto before = state_of(m);
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "res.body.0", w), netmorph::value_error,
                         "nn::widen: layer 'conv' holds 4 entries of the channels of layer "
                         "'res.body.0' (16); they are the features of a flatten");
  REQUIRE(state_of(m) == before);
}

TEST_CASE("a replace token does not restore in the model a move left empty", "[nn][names]") {
  std::mt19937_64 rng(107);
  nn::model<double> m({2, 6, 6});
  m.add(conv<double>(2, 3, 3, rng), "a");
  m.add(conv<double>(3, 2, 3, rng), "b");
  nn::layer_list<double> one;
  one.push_back(m.find("a").clone());
  auto token = m.replace("a", 1, std::move(one));
  nn::model<double> moved = std::move(m);
  NM_REQUIRE_THROWS_WITH(m.restore(std::move(token)), netmorph::value_error,
                         "model::restore: the replacement is not this model's last change");
  moved.restore(std::move(token));
  REQUIRE(moved.names() == std::vector<std::string>{"a", "b"});
}

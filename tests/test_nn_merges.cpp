// Concatenating and multiplying parallel blocks (docs/DESIGN.md §8.1) and their channel groups
// (§8.5): nn::widen on DenseNet-style and Inception-style concatenations (the consumers' columns
// at the right offset), squeeze-and-excitation gates (inside a residual block), a depthwise layer
// over a concatenation, the same channels concatenated twice, and the refusals.
#include "support/channel_support.hpp"

#include <netmorph/nn.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::tensor;
using nmtest::bn;
using nmtest::conv;
using nmtest::draw;
using nmtest::idx;
using nmtest::path;
using nmtest::relu;
using nmtest::require_exact_widen;
using nmtest::state_of;
namespace nn = netmorph::nn;

namespace {

/// A parallel block `name` merging `paths`, whose layers are named `name.p<i>.<j>` (a nested
/// block keeps its own inner names below that).
template <typename Scalar>
nn::parallel<Scalar> block(const std::string& name, nn::merge_kind merge,
                           std::vector<nn::layer_list<Scalar>> paths) {
  for (std::size_t i = 0; i < paths.size(); ++i)
    for (std::size_t j = 0; j < paths[i].size(); ++j) {
      const std::string n = name + ".p" + std::to_string(i) + "." + std::to_string(j);
      if (auto* inner = nn::layer_cast<nn::parallel>(paths[i][j].get())) {
        // rename the nested block's layers under its new name
        std::vector<nn::layer_list<Scalar>> moved = std::move(inner->paths());
        nn::parallel<Scalar> renamed = block(n, inner->merge(), std::move(moved));
        paths[i][j] = std::make_unique<nn::parallel<Scalar>>(std::move(renamed));
      }
      paths[i][j]->set_name(n);
    }
  nn::parallel<Scalar> out(std::move(paths), merge);
  out.set_name(name);
  return out;
}

/// Adds `b` to `m` under the name it carries.
template <typename Scalar>
void add_named(nn::model<Scalar>& m, nn::parallel<Scalar> b) {
  const std::string name = b.name();
  m.add(std::move(b), name);
}

template <typename Scalar>
std::vector<nn::layer_list<Scalar>> paths_of(nn::layer_list<Scalar> a, nn::layer_list<Scalar> b) {
  std::vector<nn::layer_list<Scalar>> out;
  out.push_back(std::move(a));
  out.push_back(std::move(b));
  return out;
}

template <typename Scalar>
nn::activation<Scalar> act(activation_kind k) {
  return nn::activation<Scalar>(activation_fn{k});
}

/// "name:role@offset" for every member of the group.
inline std::vector<std::string> places(const nn::channel_group& g) {
  std::vector<std::string> out;
  for (const auto& mb : g.members)
    out.push_back(mb.layer + ":" + nn::to_string(mb.role) + "@" + std::to_string(mb.offset));
  return out;
}

/// A stem of c0 channels, a dense block of two DenseNet layers (batch norm, ReLU, 1x1 to 2g,
/// batch norm, ReLU, 3x3 to g; concatenated after the block's input, as torch.cat([x, new])),
/// a transition (batch norm, ReLU, 1x1) and a flatten.
template <typename Scalar>
nn::model<Scalar> densenet(std::mt19937_64& rng, idx c0, idx g, idx in = 2, idx classes = 3) {
  nn::model<Scalar> m({in, 6, 6}, 7);
  m.add(conv<Scalar>(in, c0, 3, rng), "stem");
  idx c = c0;
  for (int k = 0; k < 2; ++k, c += g)
    add_named(m, block<Scalar>("d" + std::to_string(k), nn::merge_kind::concat,
                               paths_of(nn::layer_list<Scalar>(),
                                        path<Scalar>(bn<Scalar>(c, rng), relu<Scalar>(),
                                                     conv<Scalar>(c, 2 * g, 1, rng, 1, false),
                                                     bn<Scalar>(2 * g, rng), relu<Scalar>(),
                                                     conv<Scalar>(2 * g, g, 3, rng)))));
  m.add(bn<Scalar>(c, rng), "trans_bn");
  m.add(relu<Scalar>(), "trans_relu");
  m.add(conv<Scalar>(c, classes, 1, rng), "trans");
  m.add(nn::flatten<Scalar>(), "flat");
  return m;
}

/// A stem and an Inception block: 1x1 (a), 1x1 then 3x3 (b), 3x3 max pooling then 1x1 (e),
/// concatenated, then a 3x3 head.
template <typename Scalar>
nn::model<Scalar> inception(std::mt19937_64& rng, idx c, idx a, idx b, idx e) {
  nn::model<Scalar> m({2, 5, 5}, 8);
  m.add(conv<Scalar>(2, c, 3, rng), "stem");
  m.add(relu<Scalar>(), "stem_relu");
  std::vector<nn::layer_list<Scalar>> ps;
  ps.push_back(path<Scalar>(conv<Scalar>(c, a, 1, rng)));
  ps.push_back(
      path<Scalar>(conv<Scalar>(c, c, 1, rng), relu<Scalar>(), conv<Scalar>(c, b, 3, rng)));
  ps.push_back(path<Scalar>(nn::pool2d<Scalar>(netmorph::nn::pool_mode::max, 3, 1, 1),
                            conv<Scalar>(c, e, 1, rng)));
  add_named(m, block<Scalar>("inc", nn::merge_kind::concat, std::move(ps)));
  m.add(relu<Scalar>(), "inc_relu");
  m.add(conv<Scalar>(a + b + e, 3, 3, rng), "head");
  m.add(nn::flatten<Scalar>(), "flat");
  return m;
}

/// A squeeze-and-excitation gate over c channels (reduced to r): the identity times
/// (adaptive average pooling, 1x1, ReLU, 1x1, hard sigmoid), broadcast over H and W.
template <typename Scalar>
std::vector<nn::layer_list<Scalar>> se_paths(std::mt19937_64& rng, idx c, idx r) {
  return paths_of(
      nn::layer_list<Scalar>(),
      path<Scalar>(nn::adaptive_pool2d<Scalar>(1, 1), conv<Scalar>(c, r, 1, rng), relu<Scalar>(),
                   conv<Scalar>(r, c, 1, rng), act<Scalar>(activation_kind::hardsigmoid)));
}

/// A stem with batch norm, an SE-ResNet basic block (3x3, batch norm, ReLU, 3x3, batch norm, SE
/// gate; identity shortcut) and a 1x1 head.
template <typename Scalar>
nn::model<Scalar> se_resnet(std::mt19937_64& rng, idx c, idx r) {
  nn::model<Scalar> m({2, 5, 5}, 9);
  m.add(conv<Scalar>(2, c, 3, rng, 1, false), "stem");
  m.add(bn<Scalar>(c, rng), "stem_bn");
  m.add(relu<Scalar>(), "stem_relu");
  auto body = path<Scalar>(conv<Scalar>(c, c, 3, rng, 1, false), bn<Scalar>(c, rng), relu<Scalar>(),
                           conv<Scalar>(c, c, 3, rng, 1, false), bn<Scalar>(c, rng),
                           nn::parallel<Scalar>(se_paths<Scalar>(rng, c, r), nn::merge_kind::mul));
  add_named(m, block<Scalar>("blk", nn::merge_kind::add,
                             paths_of(std::move(body), nn::layer_list<Scalar>())));
  m.add(relu<Scalar>(), "blk_relu");
  m.add(conv<Scalar>(c, 3, 1, rng), "head");
  m.add(nn::flatten<Scalar>(), "flat");
  return m;
}

/// A stem, a block `name` of the given merge, a head over `c_out` channels and a flatten.
template <typename Scalar>
nn::model<Scalar> around(std::mt19937_64& rng, idx c, nn::parallel<Scalar> b, idx c_out) {
  nn::model<Scalar> m({2, 5, 5}, 10);
  m.add(conv<Scalar>(2, c, 3, rng), "stem");
  m.add(relu<Scalar>(), "stem_relu");
  add_named(m, std::move(b));
  m.add(conv<Scalar>(c_out, 3, 1, rng), "head");
  m.add(nn::flatten<Scalar>(), "flat");
  return m;
}

}  // namespace

TEST_CASE("channel groups place concatenated channels at their offsets", "[nn][channels][merge]") {
  std::mt19937_64 rng(201);
  const auto m = densenet<double>(rng, 4, 3);
  CHECK(places(nn::channel_group_of(m, "d0.p1.5")) ==
        std::vector<std::string>{"d0.p1.5:producer@0", "d1.p1.0:through@4", "d1.p1.2:consumer@4",
                                 "trans_bn:through@4", "trans:consumer@4"});
  CHECK(places(nn::channel_group_of(m, "d1.p1.5")) ==
        std::vector<std::string>{"d1.p1.5:producer@0", "trans_bn:through@7", "trans:consumer@7"});
  CHECK(places(nn::channel_group_of(m, "stem")) ==
        std::vector<std::string>{"stem:producer@0", "d0.p1.0:through@0", "d0.p1.2:consumer@0",
                                 "d1.p1.0:through@0", "d1.p1.2:consumer@0", "trans_bn:through@0",
                                 "trans:consumer@0"});
  const auto inc = inception<double>(rng, 3, 2, 4, 3);
  CHECK(places(nn::channel_group_of(inc, "inc.p2.1")) ==
        std::vector<std::string>{"inc.p2.1:producer@0", "head:consumer@6"});
  CHECK(places(nn::channel_group_of(inc, "stem")) ==
        std::vector<std::string>{"stem:producer@0", "inc.p0.0:consumer@0", "inc.p1.0:consumer@0",
                                 "inc.p2.1:consumer@0"});
  const auto se = se_resnet<double>(rng, 4, 2);
  CHECK(places(nn::channel_group_of(se, "stem")) ==
        std::vector<std::string>{"stem:producer@0", "stem_bn:through@0", "blk.p0.0:consumer@0",
                                 "blk.p0.3:producer@0", "blk.p0.4:through@0",
                                 "blk.p0.5.p1.1:consumer@0", "blk.p0.5.p1.3:producer@0",
                                 "head:consumer@0"});
}

TEMPLATE_TEST_CASE("nn::widen of a DenseNet-style concatenation is exact on random shapes",
                   "[nn][channels][merge][width]", float, double) {
  std::mt19937_64 rng(202);
  for (int trial = 0; trial < 3; ++trial) {
    const auto m = densenet<TestType>(rng, draw(rng, 2, 5), draw(rng, 1, 4));
    for (const char* target : {"stem", "d0.p1.2", "d0.p1.5", "d1.p1.5"})
      require_exact_widen(m, target, draw(rng, 1, 4), rng);
  }
}

TEST_CASE("nn::widen of a concatenated path grows the later layers' columns at its offset",
          "[nn][channels][merge][width]") {
  std::mt19937_64 rng(203);
  const idx c0 = 3, g = 2, grow = 2;
  nn::model<double> m = densenet<double>(rng, c0, g, 1);
  // Velocities as after training, to see them move with the columns.
  for (auto* p : m.parameters())
    p->velocity = nmtest::randn<double>(p->value.shape(), rng);
  const tensor<double> w = nn::layer_cast<nn::conv2d>(&m.find("trans"))->weight().value;
  const tensor<double> v = nn::layer_cast<nn::conv2d>(&m.find("trans"))->weight().velocity;
  netmorph::widen_options opt;
  opt.new_channels = g + grow;
  opt.permute = false;
  const auto r = nn::widen(m, "d0.p1.5", opt);
  REQUIRE(*r.relative_output_error <= 1e-9);
  const auto* t = nn::layer_cast<nn::conv2d>(&m.find("trans"));
  const tensor<double>& w2 = t->weight().value;
  const tensor<double>& v2 = t->weight().velocity;
  const idx c = c0 + 2 * g;  // the transition's input: stem, d0's and d1's new channels
  REQUIRE(w2.dim(1) == c + grow);
  // Old column j sits at j before d0's block end (c0 + g), at j + grow after it; the grown
  // columns in between are zero, weights and velocities alike.
  for (idx o = 0; o < w2.dim(0); ++o)
    for (idx j = 0; j < c + grow; ++j) {
      CAPTURE(o, j);
      if (j >= c0 + g && j < c0 + g + grow) {
        REQUIRE(w2(o, j, 0, 0) == 0.0);
        REQUIRE(v2(o, j, 0, 0) == 0.0);
      } else {
        const idx old = j < c0 + g ? j : j - grow;
        REQUIRE(w2(o, j, 0, 0) == w(o, old, 0, 0));
        REQUIRE(v2(o, j, 0, 0) == v(o, old, 0, 0));
      }
    }
}

TEMPLATE_TEST_CASE("nn::widen of an Inception block's branches and of its input is exact",
                   "[nn][channels][merge][width]", float, double) {
  std::mt19937_64 rng(204);
  for (int trial = 0; trial < 3; ++trial) {
    const auto m = inception<TestType>(rng, draw(rng, 2, 4), draw(rng, 1, 3), draw(rng, 1, 3),
                                       draw(rng, 1, 3));
    for (const char* target : {"stem", "inc.p0.0", "inc.p1.0", "inc.p1.2", "inc.p2.1"})
      require_exact_widen(m, target, draw(rng, 1, 3), rng);
  }
}

TEMPLATE_TEST_CASE("nn::widen through a squeeze-and-excitation gate is exact",
                   "[nn][channels][merge][width]", float, double) {
  std::mt19937_64 rng(205);
  for (int trial = 0; trial < 3; ++trial) {
    const auto m = se_resnet<TestType>(rng, draw(rng, 2, 5), draw(rng, 1, 3));
    for (const char* target : {"stem", "blk.p0.0", "blk.p0.5.p1.1"})
      require_exact_widen(m, target, draw(rng, 1, 3), rng);
  }
}

TEMPLATE_TEST_CASE(
    "nn::widen of a concatenation a depthwise layer filters, and of channels concatenated twice",
    "[nn][channels][merge][width]", float, double) {
  std::mt19937_64 rng(206);
  const idx c = 3, a = 2, b = 3;
  std::vector<nn::layer_list<TestType>> ps;
  ps.push_back(path<TestType>(conv<TestType>(c, a, 3, rng)));
  ps.push_back(path<TestType>(conv<TestType>(c, b, 1, rng)));
  nn::model<TestType> dw =
      around<TestType>(rng, c, block<TestType>("cc", nn::merge_kind::concat, std::move(ps)), a + b);
  // a depthwise 3x3 and a batch norm over the concatenation, before the head
  nn::model<TestType> m({2, 5, 5}, 11);
  for (const auto& l : dw.layers()) {
    if (l->name() == "head") {
      m.add(conv<TestType>(a + b, a + b, 3, rng, 1, true, a + b), "dw");
      m.add(bn<TestType>(a + b, rng), "dw_bn");
    }
    nn::visit(*l, [&](const auto& x) { m.add(x, l->name()); });
  }
  CHECK(places(nn::channel_group_of(m, "cc.p1.0")) ==
        std::vector<std::string>{"cc.p1.0:producer@0", "dw:through@2", "dw_bn:through@2",
                                 "head:consumer@2"});
  for (const char* target : {"stem", "cc.p0.0", "cc.p1.0"})
    require_exact_widen(m, target, draw(rng, 1, 3), rng);
  const auto before = state_of(m);
  netmorph::widen_options w;
  w.new_channels = 8;
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "dw", w), netmorph::value_error,
                         "nn::widen: layer 'dw' (conv2d 5->5 3x3 stride 1 padding 1 groups 5) "
                         "filters the channels of a concatenation; widen a layer that makes them");
  REQUIRE(state_of(m) == before);
  // The same channels twice: a batch norm and a depthwise layer hold the stem's channels at 0 and,
  // through a tanh, at c; so does the head.
  std::vector<nn::layer_list<TestType>> twice;
  twice.emplace_back();
  twice.push_back(path<TestType>(act<TestType>(activation_kind::tanh)));
  nn::model<TestType> dup({2, 5, 5}, 12);
  dup.add(conv<TestType>(2, c, 3, rng), "stem");
  add_named(dup, block<TestType>("dup", nn::merge_kind::concat, std::move(twice)));
  dup.add(bn<TestType>(2 * c, rng), "dup_bn");
  dup.add(conv<TestType>(2 * c, 2 * c, 3, rng, 1, true, 2 * c), "dup_dw");
  dup.add(conv<TestType>(2 * c, 3, 1, rng), "head");
  CHECK(places(nn::channel_group_of(dup, "stem")) ==
        std::vector<std::string>{"stem:producer@0", "dup_bn:through@0", "dup_bn:through@3",
                                 "dup_dw:through@0", "dup_dw:through@3", "head:consumer@0",
                                 "head:consumer@3"});
  require_exact_widen(dup, "stem", 2, rng);
}

TEST_CASE(
    "nn::widen refuses channels merged where they cannot grow, and leaves the model as it was",
    "[nn][channels][merge][width][error]") {
  std::mt19937_64 rng(207);
  const idx c = 3;
  netmorph::widen_options w;
  w.new_channels = 5;
  // A spatial gate: one channel broadcast over the stream's.
  auto gate =
      paths_of(nn::layer_list<double>(),
               path<double>(conv<double>(c, 1, 1, rng), act<double>(activation_kind::sigmoid)));
  auto sg = around<double>(rng, c, block<double>("sg", nn::merge_kind::mul, std::move(gate)), c);
  auto before = state_of(sg);
  NM_REQUIRE_THROWS_WITH(nn::widen(sg, "sg.p1.0", w), netmorph::value_error,
                         "nn::widen: the channels of layer 'sg.p1.0' cannot grow: block 'sg' "
                         "(parallel 2 paths (0 layers, 2 layers) mul) broadcasts path 1's one "
                         "channel over the others");
  REQUIRE(state_of(sg) == before);
  require_exact_widen(sg, "stem", 2, rng);  // the stream itself grows; the gate reads it
}

TEMPLATE_TEST_CASE(
    "nn::widen where a sum or a gate meets a concatenation splits the other path's channels",
    "[nn][channels][merge][width]", float, double) {
  std::mt19937_64 rng(209);
  const idx c = 3;
  netmorph::widen_options w;
  w.new_channels = 5;
  // A concatenation (2 + 1 channels) summed with one convolution's 3 channels: its rows split
  // between the two concatenated layers' groups.
  std::vector<nn::layer_list<TestType>> inner;
  inner.push_back(path<TestType>(conv<TestType>(c, 2, 1, rng)));
  inner.push_back(path<TestType>(conv<TestType>(c, 1, 3, rng)));
  auto mix = around<TestType>(
      rng, c,
      block<TestType>(
          "mix", nn::merge_kind::add,
          paths_of(path<TestType>(nn::parallel<TestType>(std::move(inner), nn::merge_kind::concat)),
                   path<TestType>(conv<TestType>(c, 3, 1, rng), bn<TestType>(3, rng)))),
      3);
  CHECK(places(nn::channel_group_of(mix, "mix.p0.0.p1.0")) ==
        std::vector<std::string>{"mix.p0.0.p1.0:producer@0", "mix.p1.0:producer@2",
                                 "mix.p1.1:through@2", "head:consumer@2"});
  for (const char* target : {"stem", "mix.p0.0.p0.0", "mix.p0.0.p1.0"})
    require_exact_widen(mix, target, draw(rng, 1, 3), rng);
  auto before = state_of(mix);
  NM_REQUIRE_THROWS_WITH(nn::widen(mix, "mix.p1.0", w), netmorph::value_error,
                         "nn::widen: layer 'mix.p1.0' (conv2d 3->3 1x1 stride 1 padding 0) "
                         "writes channels that a merge with a concatenation splits between "
                         "several groups; widen a layer of the concatenation");
  REQUIRE(state_of(mix) == before);
  // A squeeze-and-excitation gate over a DenseNet-style concatenation: the gate's last
  // convolution holds the stem's channels in its first rows and the new features' after them.
  nn::model<TestType> cs({2, 5, 5}, 13);
  cs.add(conv<TestType>(2, c, 3, rng), "stem");
  add_named(cs, block<TestType>("d0", nn::merge_kind::concat,
                                paths_of(nn::layer_list<TestType>(),
                                         path<TestType>(conv<TestType>(c, 2, 3, rng)))));
  add_named(cs, block<TestType>("se", nn::merge_kind::mul, se_paths<TestType>(rng, c + 2, 2)));
  cs.add(conv<TestType>(c + 2, 3, 1, rng), "head");
  CHECK(places(nn::channel_group_of(cs, "d0.p1.0")) ==
        std::vector<std::string>{"d0.p1.0:producer@0", "se.p1.1:consumer@3", "se.p1.3:producer@3",
                                 "head:consumer@3"});
  for (const char* target : {"stem", "d0.p1.0", "se.p1.1"})
    require_exact_widen(cs, target, draw(rng, 1, 3), rng);
  before = state_of(cs);
  NM_REQUIRE_THROWS_WITH(nn::widen(cs, "se.p1.3", w), netmorph::value_error,
                         "splits between several groups");
  REQUIRE(state_of(cs) == before);
}

TEST_CASE("a model with concatenations and gates trains, and so does its widened child",
          "[nn][merge][train]") {
  std::mt19937_64 rng(208);
  const auto d = nmtest::synthetic<double>(60, rng);
  nn::model<double> m({1, 8, 8}, 12);
  m.add(conv<double>(1, 4, 3, rng), "stem");
  m.add(relu<double>(), "stem_relu");
  add_named(m, block<double>("se", nn::merge_kind::mul, se_paths<double>(rng, 4, 2)));
  add_named(m, block<double>("d0", nn::merge_kind::concat,
                             paths_of(nn::layer_list<double>(),
                                      path<double>(bn<double>(4, rng), relu<double>(),
                                                   conv<double>(4, 3, 3, rng)))));
  m.add(nn::adaptive_pool2d<double>(2, 2), "pool");
  m.add(nn::flatten<double>(), "flat");
  m.add(nn::dense<double>(nmtest::randn<double>({3, 28}, rng, 0.2), tensor<double>({3})), "fc");
  const double start = nn::evaluate(m, d).loss;
  for (int e = 0; e < 5; ++e)
    nn::train_epoch(m, d, nn::sgd{0.05, 0.9, 0}, 10);
  const double trained = nn::evaluate(m, d).loss;
  REQUIRE(trained < start);
  netmorph::widen_options w;
  w.new_channels = 6;
  w.probe.count = 4;
  REQUIRE(*nn::widen(m, "d0.p1.2", w).relative_output_error <= 1e-9);
  REQUIRE(*nn::widen(m, "stem", w).relative_output_error <= 1e-9);
  REQUIRE(nn::evaluate(m, d).loss == Approx(trained).epsilon(1e-9));
  for (int e = 0; e < 5; ++e)
    nn::train_epoch(m, d, nn::sgd{0.05, 0.9, 0}, 10);
  REQUIRE(nn::evaluate(m, d).loss < trained);
}

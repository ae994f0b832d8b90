#include "support/nn_support.hpp"

#include <netmorph/nn/model.hpp>
#include <netmorph/nn/notation.hpp>

#include <sstream>

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::tensor;
using nmtest::draw;
using nmtest::idx;
using nmtest::state_of;
using nmtest::synthetic;
namespace nn = netmorph::nn;

TEMPLATE_TEST_CASE("training decreases the loss on a small synthetic task", "[nn][train]", float,
                   double) {
  auto rng = nmtest::make_rng(120);
  auto data = synthetic<TestType>(96, rng);
  nn::architecture_options t;
  t.classes = 3;
  t.dense_head = {16};
  t.batch_norm = true;
  auto m = nn::parse_architecture<TestType>("(3:8)(3:8)", {1, 8, 8}, t);
  m.add(nn::dropout<TestType>(0.0));
  const double before = nn::evaluate(m, data).loss;
  nn::sgd opt{0.05, 0.9, 1e-4};
  std::ostringstream progress;
  for (int e = 0; e < 8; ++e) {
    opt.lr = nn::step_schedule{0.05, 0.5, 4}(e);
    nn::train_epoch(m, data, opt, 16, e, &progress);
  }
  const auto after = nn::evaluate(m, data);
  CAPTURE(before, after.loss, after.accuracy, progress.str());
  REQUIRE(after.loss < 0.5 * before);
  REQUIRE(after.accuracy > 0.9);
  REQUIRE(progress.str().find("epoch 7  loss") != std::string::npos);
  REQUIRE(progress.str().find("samples/s") != std::string::npos);
}

TEST_CASE("a seed makes training reproducible", "[nn][train]") {
  std::mt19937_64 rng(3);
  auto data = synthetic<double>(48, rng);
  nn::architecture_options t;
  t.classes = 3;
  auto run = [&]() {
    auto m = nn::parse_architecture<double>("(3:4)", {1, 8, 8}, t);
    m.add(nn::dropout<double>(0.2));
    for (int e = 0; e < 2; ++e)
      nn::train_epoch(m, data, nn::sgd{}, 8, e);
    return nn::evaluate(m, data).loss;
  };
  REQUIRE(run() == run());
}

TEST_CASE("model backward returns the input gradient only when asked", "[nn][gradient]") {
  std::mt19937_64 rng(21);
  nn::architecture_options t;
  t.classes = 3;
  t.act = activation_fn{activation_kind::tanh};
  auto m = nn::parse_architecture<double>("(3:2)", {1, 4, 4}, t);
  auto x = nmtest::randn<double>({2, 1, 4, 4}, rng);
  const auto r = nmtest::randn<double>({2, 3}, rng);
  m.forward(x, true);
  REQUIRE(m.backward(r).empty());  // the first layer's input is data: skipped
  m.zero_grad();
  m.forward(x, true);
  const auto dx = m.backward(r, true);
  REQUIRE(dx.shape() == x.shape());
  auto loss = [&]() {
    const auto y = m.forward(x, false);
    double s = 0;
    for (idx i = 0; i < y.size(); ++i)
      s += r.data()[i] * y.data()[i];
    return s;
  };
  for (idx i = 0; i < x.size(); ++i) {
    const double keep = x.data()[i], h = 1e-6;
    x.data()[i] = keep + h;
    const double lp = loss();
    x.data()[i] = keep - h;
    const double lm = loss();
    x.data()[i] = keep;
    REQUIRE(dx.data()[i] == Approx((lp - lm) / (2 * h)).epsilon(1e-5).margin(1e-7));
  }
}

TEMPLATE_TEST_CASE("a model's reused training buffers give the results of a fresh model",
                   "[nn][train]", float, double) {
  const double tol = nmtest::exact_tolerance<TestType>();
  auto rng = nmtest::make_rng(121);
  nn::architecture_options t;
  t.classes = 3;
  t.dense_head = {8};
  t.seed = 5;
  // (5:8) on 2 channels takes conv2d's im2col route, (3:8) on 8 channels its shifted-rows route.
  const auto proto = nn::parse_architecture<TestType>("(5:8)(3:8)", {2, 9, 9}, t);
  auto reused = proto;
  auto grads = [](nn::model<TestType>& m) {
    std::vector<tensor<TestType>> g;
    for (auto* p : m.parameters())
      g.push_back(p->grad);
    return g;
  };
  for (idx n : {5, 3, 5, 1}) {
    CAPTURE(n);
    const auto x = nmtest::randn<TestType>({n, 2, 9, 9}, rng);
    const auto other = nmtest::randn<TestType>({n + 1, 2, 9, 9}, rng);
    auto fresh = proto;
    const auto y_fresh = fresh.forward(x, true);
    const auto dy = nmtest::randn<TestType>(y_fresh.shape(), rng);
    const auto dx_fresh = fresh.backward(dy, true);

    reused.zero_grad();
    const auto y = reused.forward(x, true);
    reused.forward(other, false);  // an inference pass in between leaves the backward pass alone
    const auto dx = reused.backward(dy, true);
    REQUIRE(netmorph::relative_error(y, y_fresh) <= tol);
    REQUIRE(netmorph::relative_error(dx, dx_fresh) <= tol);
    const auto g = grads(reused), g_fresh = grads(fresh);
    REQUIRE(g.size() == g_fresh.size());
    for (std::size_t i = 0; i < g.size(); ++i)
      REQUIRE(netmorph::relative_error(g[i], g_fresh[i]) <= tol);

    // A copy taken between forward and backward keeps its own inputs: the original's next
    // training pass does not reach into it.
    reused.forward(x, true);
    auto copy = reused;
    reused.forward(other, true);
    copy.zero_grad();
    REQUIRE(netmorph::relative_error(copy.backward(dy, true), dx_fresh) <= tol);
    const auto g_copy = grads(copy);
    for (std::size_t i = 0; i < g.size(); ++i)
      REQUIRE(netmorph::relative_error(g_copy[i], g_fresh[i]) <= tol);
  }
}

namespace {

/// A residual block: a conv path and the identity shortcut.
nn::parallel<double> residual(idx c, std::mt19937_64& rng) {
  std::vector<nn::layer_list<double>> paths(2);
  paths[0].push_back(std::make_unique<nn::conv2d<double>>(nmtest::randn<double>({c, c, 3, 3}, rng),
                                                          nmtest::randn<double>({c}, rng),
                                                          netmorph::conv2d_options{1, 1}));
  paths[0].push_back(std::make_unique<nn::activation<double>>(activation_fn{}));
  return nn::parallel<double>(std::move(paths));
}

/// conv 2->3 3x3, ReLU, a residual block "block", flatten, dense 108->2 on 2x6x6.
nn::model<double> block_model(std::mt19937_64& rng) {
  nn::model<double> m({2, 6, 6});
  m.add(nn::conv2d<double>::he(2, 3, 3, rng));
  m.add(nn::activation<double>(activation_fn{}));
  m.add(residual(3, rng), "block");
  m.add(nn::flatten<double>());
  m.add(nn::dense<double>::he(3 * 36, 2, rng));
  return m;
}

}  // namespace

TEST_CASE("layers have unique state_dict-style names, also inside parallel blocks", "[nn][names]") {
  std::mt19937_64 rng(41);
  nn::model<double> m({2, 6, 6});
  m.add(nn::conv2d<double>::he(2, 3, 3, rng));
  m.add(residual(3, rng), "block");
  m.add(nn::activation<double>(activation_fn{}));
  m.add(nn::flatten<double>(), "features.flat");
  REQUIRE(m.names() == std::vector<std::string>{"0", "block", "block.path0.0", "block.path0.1", "2",
                                                "features.flat"});
  REQUIRE(m.find("block.path0.0").kind() == nn::layer_kind::conv2d);
  const nn::model<double>& cm = m;
  REQUIRE(cm.layers().size() == 4);
  REQUIRE(cm.find("2").kind() == nn::layer_kind::activation);
  auto slot = m.locate("block.path0.1");
  REQUIRE(slot.position == 1);
  REQUIRE(slot.list->size() == 2);
  NM_REQUIRE_THROWS_WITH(m.find("block.path1.0"), netmorph::value_error,
                         "model: no layer named 'block.path1.0'; the layers are '0', 'block', "
                         "'block.path0.0'");
  NM_REQUIRE_THROWS_WITH(m.add(nn::dropout<double>(0.1), "block"), netmorph::value_error,
                         "model::add: a layer named 'block' exists already");
  // A parallel block's inner names count too, and names are state_dict segments.
  nn::model<double> clash({3, 6, 6});
  clash.add(nn::dropout<double>(0.0), "blk.path0.0");
  NM_REQUIRE_THROWS_WITH(clash.add(residual(3, rng), "blk"), netmorph::value_error,
                         "model::add: a layer named 'blk.path0.0' exists already");
  for (const char* bad : {"a:b", ".x", "x.", "a..b", "a b"})
    NM_REQUIRE_THROWS_WITH(clash.add(nn::dropout<double>(0.0), bad), netmorph::value_error,
                           "' must be dot-separated segments of letters, digits, '_' and '-'");
  // A default name skips names the caller took.
  nn::model<double> n({4});
  n.add(nn::dense<double>::he(4, 4, rng), "1");
  n.add(nn::dense<double>::he(4, 4, rng));
  REQUIRE(n.names() == std::vector<std::string>{"1", "2"});
  // A copy keeps the names.
  auto copy = m;
  REQUIRE(copy.names() == m.names());
  // Layers inside a block keep names that start with the block's (a ResNet block 'layer1.0'
  // holds 'layer1.0.conv1'); others get the path rule, and names inside a block are distinct.
  auto named_block = [&](const std::string& first, const std::string& second) {
    nn::parallel<double> b = residual(3, rng);
    b.paths()[0][0]->set_name(first);
    b.paths()[0][1]->set_name(second);
    return b;
  };
  nn::model<double> r({3, 6, 6});
  r.add(named_block("layer1.0.conv1", "elsewhere.relu"), "layer1.0");
  REQUIRE(r.names() == std::vector<std::string>{"layer1.0", "layer1.0.conv1", "layer1.0.path0.1"});
  NM_REQUIRE_THROWS_WITH(r.add(named_block("layer1.1.a", "layer1.1.a"), "layer1.1"),
                         netmorph::value_error,
                         "model::add: the layer name 'layer1.1.a' is given twice");
  NM_REQUIRE_THROWS_WITH(r.add(named_block("layer1.1.a:b", "x"), "layer1.1"), netmorph::value_error,
                         "layer name 'layer1.1.a:b' must be");
  REQUIRE(r.names().size() == 3);
}

TEST_CASE("model::replace names the new layers by one rule and keeps the model on failure",
          "[nn][names][error]") {
  std::mt19937_64 rng(42);
  nn::model<double> m = block_model(rng);
  nn::train_epoch(m, nn::dataset<double>{nmtest::randn<double>({4, 2, 6, 6}, rng), {0, 1, 0, 1}},
                  nn::sgd{}, 2);  // non-zero velocities
  const auto x = nmtest::randn<double>({2, 2, 6, 6}, rng);
  const auto y = m.forward(x, false);

  // n ReLUs in a row compute one ReLU, so the replacements below keep the function.
  auto one_by = [&](idx n) {
    nn::layer_list<double> l;
    for (idx k = 0; k < n; ++k)
      l.push_back(std::make_unique<nn::activation<double>>(activation_fn{}));
    return l;
  };
  // k by k keeps the names; 1 by n names them N.0, N.1, ...
  m.replace("1", 1, one_by(1));
  REQUIRE(m.names()[1] == "1");
  m.replace("block.path0.1", 1, one_by(2));
  REQUIRE(m.names() == std::vector<std::string>{"0", "1", "block", "block.path0.0",
                                                "block.path0.1.0", "block.path0.1.1", "3", "4"});
  REQUIRE(netmorph::relative_error(m.forward(x, false), y) == 0.0);

  // Failures leave everything as it was: names, parameters, gradients, velocities, outputs and
  // the next training step.
  const auto names = m.names();
  const auto before = state_of(m);
  auto twin = m;
  auto same_as_before = [&]() {
    REQUIRE(m.names() == names);
    const auto now = state_of(m);
    REQUIRE(now.size() == before.size());
    for (std::size_t i = 0; i < now.size(); ++i)
      REQUIRE(now[i] == before[i]);
  };
  NM_REQUIRE_THROWS_WITH(m.replace("0", 3, one_by(2)), netmorph::value_error,
                         "model::replace: 3 layers cannot be replaced by 2");
  NM_REQUIRE_THROWS_WITH(m.replace("4", 2, one_by(2)), netmorph::value_error,
                         "model::replace: 2 layers from '4' run past the end of its list of 5");
  NM_REQUIRE_THROWS_WITH(m.replace("nope", 1, one_by(1)), netmorph::value_error,
                         "model: no layer named 'nope'");
  auto wrong = [&]() {  // 5 output channels where the next layer expects 3
    nn::layer_list<double> l;
    l.push_back(std::make_unique<nn::conv2d<double>>(nmtest::randn<double>({5, 2, 3, 3}, rng),
                                                     tensor<double>(),
                                                     netmorph::conv2d_options{1, 1}));
    return l;
  };
  NM_REQUIRE_THROWS_WITH(m.replace("0", 1, wrong()), netmorph::shape_error,
                         "nn::conv2d: input has 5 channels, weight expects 3");
  same_as_before();
  REQUIRE(netmorph::relative_error(m.forward(x, false), twin.forward(x, false)) == 0.0);
  const nn::dataset<double> batch{nmtest::randn<double>({4, 2, 6, 6}, rng), {1, 0, 1, 0}};
  nn::train_epoch(m, batch, nn::sgd{}, 4);
  nn::train_epoch(twin, batch, nn::sgd{}, 4);
  const auto after = state_of(m), after_twin = state_of(twin);
  for (std::size_t i = 0; i < after.size(); ++i)
    REQUIRE(after[i] == after_twin[i]);
}

TEST_CASE("model::restore undoes a replace: layers, names and shapes", "[nn][names]") {
  std::mt19937_64 rng(43);
  nn::model<double> m = block_model(rng);
  const auto x = nmtest::randn<double>({2, 2, 6, 6}, rng);
  const auto y = m.forward(x, false);
  const auto names = m.names();
  const auto before = state_of(m);
  const auto out = m.output_shape();
  for (const std::string first : {"0", "block.path0.1", "4"}) {
    CAPTURE(first);
    const nn::layer<double>* old = &m.find(first);
    nn::layer_list<double> two;  // a layer and a ReLU after it, new names; the last one grows
    if (first == "4")
      two.push_back(std::make_unique<nn::dense<double>>(nn::dense<double>::he(3 * 36, 5, rng)));
    else
      two.push_back(m.find(first).clone());
    two.push_back(std::make_unique<nn::activation<double>>(activation_fn{}));
    auto undo = m.replace(first, 1, std::move(two));
    REQUIRE(undo.layers().size() == 1);
    REQUIRE(undo.layers()[0].get() == old);
    REQUIRE(m.names() != names);
    if (first == "4") REQUIRE(m.output_shape() == netmorph::shape_type{5});
    m.restore(std::move(undo));
    REQUIRE(&m.find(first) == old);  // the very layer, not a copy
    REQUIRE(m.names() == names);
    REQUIRE(m.output_shape() == out);
    REQUIRE(state_of(m) == before);
    REQUIRE(m.forward(x, false) == y);
    // The names the replacement had are free again, those of the parent taken.
    NM_REQUIRE_THROWS_WITH(m.add(nn::flatten<double>(), first), netmorph::value_error,
                           "exists already");
    auto copy = m;
    copy.add(nn::activation<double>(activation_fn{}), first + ".1");
  }
  // A token restores only the change it comes from, and only once.
  const std::string misuse = "model::restore: the replacement is not this model's last change";
  auto relu = [] {
    nn::layer_list<double> l;
    l.push_back(std::make_unique<nn::activation<double>>(activation_fn{}));
    return l;
  };
  auto undo = m.replace("1", 1, relu());
  auto twin = m;
  NM_REQUIRE_THROWS_WITH(twin.restore(std::move(undo)), netmorph::value_error, misuse);
  m.restore(std::move(undo));
  NM_REQUIRE_THROWS_WITH(m.restore(std::move(undo)), netmorph::value_error, misuse);
  auto stale = m.replace("1", 1, relu());
  m.add(nn::activation<double>(activation_fn{}));
  NM_REQUIRE_THROWS_WITH(m.restore(std::move(stale)), netmorph::value_error, misuse);
  // The top level is found again after the model moved.
  auto moving = block_model(rng);
  const std::vector<std::string> moving_names = moving.names();
  auto token = moving.replace("0", 1, [&] {
    nn::layer_list<double> l;
    l.push_back(moving.find("0").clone());
    l.push_back(std::make_unique<nn::activation<double>>(activation_fn{}));
    return l;
  }());
  nn::model<double> moved = std::move(moving);
  moved.restore(std::move(token));
  REQUIRE(moved.names() == moving_names);
}

TEST_CASE("model::replace_each swaps layers in several lists as one change", "[nn][names]") {
  std::mt19937_64 rng(44);
  nn::model<double> m = block_model(rng);
  const auto x = nmtest::randn<double>({2, 2, 6, 6}, rng);
  const auto y = m.forward(x, false);
  const auto names = m.names();
  const auto before = state_of(m);
  const nn::layer<double>* old0 = &m.find("0");
  const nn::layer<double>* old_inner = &m.find("block.path0.0");
  // No swap fits alone (the residual stream grows from 3 to 4 channels); together they do.
  auto swaps = [&] {
    std::vector<std::pair<std::string, std::unique_ptr<nn::layer<double>>>> s;
    s.emplace_back("0", std::make_unique<nn::conv2d<double>>(nn::conv2d<double>::he(2, 4, 3, rng)));
    s.emplace_back("block.path0.0",
                   std::make_unique<nn::conv2d<double>>(nn::conv2d<double>::he(4, 4, 3, rng)));
    s.emplace_back("4", std::make_unique<nn::dense<double>>(nn::dense<double>::he(4 * 36, 2, rng)));
    return s;
  };
  {
    auto part = swaps();
    part.pop_back();
    REQUIRE_THROWS_AS(m.replace_each(std::move(part)), netmorph::shape_error);
    REQUIRE(&m.find("0") == old0);
    REQUIRE(state_of(m) == before);
  }
  // (The macro evaluates its expression twice: each evaluation builds its own swaps.)
  const auto renamed = [&](const char* name) {
    auto s = swaps();
    s[1].first = name;
    return s;
  };
  NM_REQUIRE_THROWS_WITH(m.replace_each(renamed("0")), netmorph::value_error,
                         "model::replace_each");
  NM_REQUIRE_THROWS_WITH(m.replace_each(renamed("block")), netmorph::value_error,
                         "model::replace_each: 'block' is or becomes a parallel block");
  REQUIRE(state_of(m) == before);
  auto undo = m.replace_each(swaps());
  REQUIRE(m.names() == names);
  REQUIRE(m.find("0").describe() == "conv2d 2->4 3x3 stride 1 padding 1");
  REQUIRE(m.find("block.path0.0").describe() == "conv2d 4->4 3x3 stride 1 padding 1");
  nn::model<double> moved = std::move(m);  // the top level is found again after a move
  moved.restore(std::move(undo));
  REQUIRE(&moved.find("0") == old0);
  REQUIRE(&moved.find("block.path0.0") == old_inner);
  REQUIRE(moved.names() == names);
  REQUIRE(state_of(moved) == before);
  REQUIRE(moved.forward(x, false) == y);
}

TEST_CASE("building a model is linear in its layers: names and shapes of 20000 layers",
          "[nn][names]") {
  // model::add used to compare each new name with every name in the model; 20000 layers took
  // 21 s. With a name set and the output shape kept, they take milliseconds.
  std::mt19937_64 rng(44);
  nn::model<float> m({4});
  const idx n = 20000;
  for (idx i = 0; i < n; ++i) {
    if (i % 2 == 0)
      m.add(nn::dense<float>::he(4, 4, rng));
    else
      m.add(nn::activation<float>(activation_fn{activation_kind::tanh}), "act" + std::to_string(i));
  }
  REQUIRE(m.size() == n);
  REQUIRE(m.find("act19999").name() == "act19999");
  REQUIRE(m.find("19998").kind() == nn::layer_kind::dense);
  NM_REQUIRE_THROWS_WITH(m.add(nn::dense<float>::he(4, 4, rng), "act7"), netmorph::value_error,
                         "model::add: a layer named 'act7' exists already");
  NM_REQUIRE_THROWS_WITH(m.add(nn::dense<float>::he(5, 4, rng)), netmorph::shape_error, "5");
  REQUIRE(m.size() == n);
  REQUIRE(m.output_shape() == netmorph::shape_type{4});
  m.add(nn::dense<float>::he(4, 3, rng));
  REQUIRE(m.output_shape() == netmorph::shape_type{3});
  REQUIRE(m.names().back() == "20000");
}

TEST_CASE("evaluate and train_epoch check their batch size and labels", "[nn][train][error]") {
  std::mt19937_64 rng(43);
  auto m = nn::parse_architecture<double>("(3:2)", {1, 8, 8});
  auto d = synthetic<double>(6, rng);
  NM_REQUIRE_THROWS_WITH(nn::evaluate(m, d, 0), netmorph::value_error,
                         "evaluate: batch must be >= 1, got 0");
  NM_REQUIRE_THROWS_WITH(nn::train_epoch(m, d, nn::sgd{}, -1), netmorph::value_error,
                         "train_epoch: batch must be >= 1, got -1");
  d.labels.pop_back();
  NM_REQUIRE_THROWS_WITH(nn::evaluate(m, d), netmorph::shape_error,
                         "evaluate: 5 labels for 6 samples");
  NM_REQUIRE_THROWS_WITH(nn::train_epoch(m, d, nn::sgd{}, 2), netmorph::shape_error,
                         "train_epoch: 5 labels for 6 samples");
}

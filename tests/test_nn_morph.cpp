#include "support/nn_support.hpp"

#include <netmorph/nn.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::tensor;
using nmtest::draw;
using nmtest::idx;
using nmtest::state_of;
using nmtest::synthetic;
namespace nn = netmorph::nn;

namespace {

/// The names of the top-level layers of one kind, in order.
template <typename Scalar>
std::vector<std::string> named(const nn::model<Scalar>& m, nn::layer_kind kind) {
  std::vector<std::string> out;
  for (const auto& l : m.layers())
    if (l->kind() == kind) out.push_back(l->name());
  return out;
}

/// Caffe's cifar10_quick adapted to 1x28x28 with batch norm, tanh and a dense head, its batch
/// norms given non-trivial running statistics as after training; and fresh inputs with the
/// parent's outputs on them, to check the child independently of the morph's own report.
template <typename Scalar>
struct fixture {
  nn::model<Scalar> m;
  tensor<Scalar> x, y;

  explicit fixture(std::mt19937_64& rng, const char* arch = "(5:32)(5:32)(5:64)")
      : m(nn::parse_architecture<Scalar>(arch, {1, 28, 28}, options(rng()))) {
    m.forward(nmtest::randn<Scalar>({8, 1, 28, 28}, rng), true);
    x = nmtest::randn<Scalar>({3, 1, 28, 28}, rng);
    y = m.forward(x, false);
  }
  static nn::architecture_options options(std::uint64_t seed) {
    nn::architecture_options t;
    t.dense_head = {64};
    t.batch_norm = true;
    t.act = activation_fn{activation_kind::tanh};
    t.seed = seed;
    return t;
  }
  /// The child's error against the parent on the fixture's inputs.
  double error() { return netmorph::relative_error(m.forward(x, false), y); }
};

/// Runs `morph` on a trained model and checks that it throws `Error` with `needle` and leaves the
/// model exactly as it was: names, parameters, gradients, velocities, outputs, and the result
/// of the next training epoch (which would differ if the buffers or the generator had moved).
template <typename Error, typename Morph>
void require_untouched(const std::string& needle, Morph&& morph) {
  std::mt19937_64 rng(77);
  const auto data = synthetic<double>(12, rng);
  auto withblock = nmtest::trained_block_model();
  auto twin = withblock;
  const auto names = withblock.names();
  const auto before = state_of(withblock);
  NM_REQUIRE_THROWS_WITH(morph(withblock), Error, needle);
  REQUIRE(withblock.names() == names);
  const auto now = state_of(withblock);
  REQUIRE(now.size() == before.size());
  for (std::size_t i = 0; i < now.size(); ++i)
    REQUIRE(now[i] == before[i]);
  nn::train_epoch(withblock, data, nn::sgd{0.01, 0.9, 1e-4}, 4);
  nn::train_epoch(twin, data, nn::sgd{0.01, 0.9, 1e-4}, 4);
  const auto after = state_of(withblock), after_twin = state_of(twin);
  for (std::size_t i = 0; i < after.size(); ++i)
    REQUIRE(after[i] == after_twin[i]);
}

}  // namespace

TEMPLATE_TEST_CASE("nn::deepen of a convolution keeps the function and names the new layers",
                   "[nn][morph][depth]", float, double) {
  auto rng = nmtest::make_rng(130);
  fixture<TestType> f(rng);
  const std::string conv = named(f.m, nn::layer_kind::conv2d)[1];
  netmorph::deepen_options d;
  d.k1 = 5;
  d.mid_channels = 4 * 32;
  d.seed = rng();
  const auto r = nn::deepen(f.m, conv, d);
  CAPTURE(r.summary());
  REQUIRE(r.operation == "deepen");
  REQUIRE(r.layer == conv);
  REQUIRE(r.new_layers == std::vector<std::string>{conv + ".0", conv + ".1", conv + ".2"});
  REQUIRE(r.probes == 4);
  REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
  REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
  REQUIRE(nn::to_notation(f.m) == "(5:32)[(5:128)(1:32)](5:64)");
  // The P-activation between the children is the model's tanh at a = 1.
  const auto* p = nn::layer_cast<nn::p_activation>(&f.m.find(conv + ".1"));
  REQUIRE(p != nullptr);
  REQUIRE(p->fn().phi.kind == activation_kind::tanh);
  REQUIRE(p->fn().a == 1.0);
}

TEMPLATE_TEST_CASE("nn::deepen of a dense layer with an inserted batch norm keeps the function",
                   "[nn][morph][depth]", float, double) {
  auto rng = nmtest::make_rng(131);
  fixture<TestType> f(rng, "(5:16)(5:16)");
  const std::string head = named(f.m, nn::layer_kind::dense)[0];
  netmorph::deepen_options d;
  d.mid_channels = 96;
  d.insert_batch_norm = true;
  d.seed = rng();
  const auto r = nn::deepen(f.m, head, d);
  REQUIRE(r.new_layers.size() == 4);
  REQUIRE(f.m.find(head + ".1").kind() == nn::layer_kind::batch_norm);
  REQUIRE(f.m.find(head + ".2").kind() == nn::layer_kind::p_activation);
  REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
  REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("nn::widen grows a convolution through batch norm and tanh, names kept",
                   "[nn][morph][width]", float, double) {
  auto rng = nmtest::make_rng(132);
  fixture<TestType> f(rng);
  const auto names = f.m.names();
  for (const auto rule : {netmorph::width_rule::netmorph, netmorph::width_rule::net2net}) {
    netmorph::widen_options w;
    const std::string conv = named(f.m, nn::layer_kind::conv2d)[0];
    w.new_channels = nn::layer_cast<nn::conv2d>(&f.m.find(conv))->weight().value.dim(0) + 16;
    w.rule = rule;
    w.seed = rng();
    const auto r = nn::widen(f.m, conv, w);
    CAPTURE(r.summary());
    REQUIRE(r.new_layers.size() == 3);  // conv, batch norm, next conv (tanh and pool are kept)
    REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
    REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
    REQUIRE(f.m.names() == names);
  }
  REQUIRE(nn::to_notation(f.m) == "(5:64)(5:32)(5:64)");
}

TEMPLATE_TEST_CASE("nn::widen of the last convolution gives each channel its H*W dense columns",
                   "[nn][morph][width]", float, double) {
  auto rng = nmtest::make_rng(133);
  fixture<TestType> f(rng);
  netmorph::widen_options w;
  w.new_channels = 80;
  w.seed = rng();
  const auto r = nn::widen(f.m, named(f.m, nn::layer_kind::conv2d)[2], w);
  REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
  REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
  // And the dense head with Net2Net's rule.
  netmorph::widen_options wd;
  wd.new_channels = 80;
  wd.rule = netmorph::width_rule::net2net;
  wd.seed = rng();
  REQUIRE(*nn::widen(f.m, named(f.m, nn::layer_kind::dense)[0], wd).relative_output_error <=
          nmtest::exact_tolerance<TestType>());
  REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
}

namespace {

/// Adam (Kingma and Ba) on every parameter of a model, kept here until nn has its own: enough to
/// see which parameters receive gradient.
struct test_adam {
  double lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::vector<tensor<double>> m1, m2;
  int t = 0;
  void step(nn::model<double>& m) {
    const auto ps = m.parameters();
    if (m1.empty())
      for (auto* p : ps) {
        m1.emplace_back(p->value.shape());
        m2.emplace_back(p->value.shape());
      }
    ++t;
    for (std::size_t i = 0; i < ps.size(); ++i)
      for (idx j = 0; j < ps[i]->value.size(); ++j) {
        const double g = ps[i]->grad.data()[j];
        double& a = m1[i].data()[j];
        double& b = m2[i].data()[j];
        a = beta1 * a + (1 - beta1) * g;
        b = beta2 * b + (1 - beta2) * g * g;
        const double ah = a / (1 - std::pow(beta1, t)), bh = b / (1 - std::pow(beta2, t));
        ps[i]->value.data()[j] -= lr * ah / (std::sqrt(bh) + eps);
      }
    m.after_step();
  }
};

/// Whether any of the `count` consecutive values from `first` differs between `a` and `b`.
bool moved(const tensor<double>& a, const tensor<double>& b, idx first, idx count) {
  for (idx j = first; j < first + count; ++j)
    if (a.data()[j] != b.data()[j]) return true;
  return false;
}

}  // namespace

TEST_CASE("every unit nn::widen adds trains: its incoming and outgoing weights move",
          "[nn][morph][width]") {
  // A unit whose incoming side is zero sits at phi'(0), which is 0 for ReLU: it, its batch-norm
  // parameters and its outgoing weights would never move. Every activation, with and without
  // batch norm, both rules, SGD and Adam: after three steps every new unit has moved both ways.
  auto rng = nmtest::make_rng(171);
  const auto x = nmtest::randn<double>({16, 2, 6, 6}, rng);
  std::vector<int> labels;
  for (int s = 0; s < 16; ++s)
    labels.push_back(s % 3);
  for (const activation_kind kind : netmorph::activation_kinds)
    for (const bool bn : {false, true})
      for (const auto rule : {netmorph::width_rule::netmorph, netmorph::width_rule::net2net}) {
        CAPTURE(netmorph::to_string(kind), bn, netmorph::to_string(rule));
        nn::architecture_options t;
        t.act = activation_fn{kind, 0.1};
        t.batch_norm = bn;
        t.pool = 0;
        t.classes = 3;
        t.seed = rng();
        auto parent = nn::parse_architecture<double>("(3:3)(3:4)", {2, 6, 6}, t);
        netmorph::widen_options w;
        w.new_channels = 6;
        w.permute = false;  // the new units are channels 3, 4 and 5
        w.rule = rule;
        w.seed = rng();
        nn::widen(parent, "0", w);
        const std::string next = named(parent, nn::layer_kind::conv2d)[1];
        auto in_of = [](nn::model<double>& m) {
          return nn::layer_cast<nn::conv2d>(&m.find("0"))->weight().value;
        };
        auto out_of = [&](nn::model<double>& m) {
          return nn::layer_cast<nn::conv2d>(&m.find(next))->weight().value;
        };
        const tensor<double> in0 = in_of(parent), out0 = out_of(parent);
        for (const bool adam : {false, true}) {
          CAPTURE(adam);
          auto child = parent;
          test_adam a;
          for (int step = 0; step < 3; ++step) {
            child.zero_grad();
            const auto l = nn::softmax_cross_entropy(child.forward(x, true), labels);
            child.backward(l.grad);
            if (adam)
              a.step(child);
            else
              nn::sgd{0.1, 0.9, 0.0}.step(child);
          }
          const tensor<double> in1 = in_of(child), out1 = out_of(child);
          const idx row = in0.size() / 6, taps = out0.dim(2) * out0.dim(3);
          for (idx q = 3; q < 6; ++q) {
            CAPTURE(q);
            REQUIRE(moved(in0, in1, q * row, row));
            bool out_moved = false;
            for (idx o = 0; o < out0.dim(0); ++o)
              out_moved = out_moved || moved(out0, out1, (o * 6 + q) * taps, taps);
            REQUIRE(out_moved);
          }
        }
      }
}

TEMPLATE_TEST_CASE("nn::grow_kernel keeps the function and the name", "[nn][morph][kernel]", float,
                   double) {
  auto rng = nmtest::make_rng(134);
  fixture<TestType> f(rng);
  const std::string conv = named(f.m, nn::layer_kind::conv2d)[0];
  netmorph::grow_kernel_options g;
  g.new_kernel = 7;
  g.seed = rng();
  const auto r = nn::grow_kernel(f.m, conv, g);
  REQUIRE(r.new_layers == std::vector<std::string>{conv});
  REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
  REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
  REQUIRE(nn::to_notation(f.m) == "(7:32)(5:32)(5:64)");
}

TEMPLATE_TEST_CASE("nn::to_subnet replaces a conv by a P-activated chain", "[nn][morph][subnet]",
                   float, double) {
  auto rng = nmtest::make_rng(135);
  nn::architecture_options t;
  t.act = activation_fn{activation_kind::sigmoid};
  t.seed = rng();
  auto m = nn::parse_architecture<TestType>("(3:4)(3:6)", {2, 8, 8}, t);
  auto x = nmtest::randn<TestType>({2, 2, 8, 8}, rng);
  const auto y = m.forward(x, false);
  netmorph::subnet_options so;
  so.kernels = {3, 1, 1};
  so.widths = {6, 8};
  so.step.seed = rng();
  const std::string conv = named(m, nn::layer_kind::conv2d)[1];
  const auto r = nn::to_subnet(m, conv, so);
  REQUIRE(r.new_layers.size() == 5);  // three convs and two P-activations replace one conv
  REQUIRE(m.find(conv + ".1").describe() == "p_activation sigmoid a 1");
  REQUIRE(m.find(conv + ".4").kind() == nn::layer_kind::conv2d);
  REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
  REQUIRE(netmorph::relative_error(m.forward(x, false), y) <= nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("nn::to_stacked_subnet makes a parallel block whose paths differ",
                   "[nn][morph][subnet][heavy]", float, double) {
  auto rng = nmtest::make_rng(136);
  fixture<TestType> f(rng);
  const std::string conv = named(f.m, nn::layer_kind::conv2d)[2];
  netmorph::stacked_subnet_options st;
  netmorph::subnet_options path;
  path.kernels = {5, 1};
  path.widths = {80};
  st.paths = {path, path};
  st.seed = rng();
  const auto r = nn::to_stacked_subnet(f.m, conv, st);
  REQUIRE(r.new_layers == std::vector<std::string>{conv});
  REQUIRE(f.m.find(conv).kind() == nn::layer_kind::parallel);
  REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
  REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
  REQUIRE(nn::to_notation(f.m).find("{(5:80)(1:64)+(5:80)(1:64)}") != std::string::npos);
  // Equal options, yet the paths are not copies of each other (they would train identically).
  const auto& a = nn::layer_cast<nn::conv2d>(&f.m.find(conv + ".path0.0"))->weight().value;
  const auto& b = nn::layer_cast<nn::conv2d>(&f.m.find(conv + ".path1.0"))->weight().value;
  REQUIRE(netmorph::relative_error(a, b) > 0.1);
  // A layer inside a path is addressed by its path and morphed in place.
  netmorph::deepen_options d;
  d.seed = rng();
  const auto rd = nn::deepen(f.m, conv + ".path1.2", d);
  REQUIRE(rd.new_layers.front() == conv + ".path1.2.0");
  netmorph::grow_kernel_options g;
  g.new_kernel = 3;
  REQUIRE(*nn::grow_kernel(f.m, conv + ".path0.2", g).relative_output_error <=
          nmtest::exact_tolerance<TestType>());
  REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
}

TEMPLATE_TEST_CASE("model morphs compose: every morph on the children of the others",
                   "[nn][morph][property][heavy]", float, double) {
  auto rng = nmtest::make_rng(137);
  fixture<TestType> f(rng);
  const auto convs = named(f.m, nn::layer_kind::conv2d);
  netmorph::deepen_options d;
  d.k1 = 5;
  d.mid_channels = 64 + draw(rng, 0, 32);
  d.seed = rng();
  nn::deepen(f.m, convs[1], d);
  netmorph::widen_options w;
  w.new_channels = 32 + draw(rng, 1, 16);
  w.seed = rng();
  nn::widen(f.m, convs[0], w);  // into the deepened conv's first child
  netmorph::widen_options w2;
  w2.new_channels = d.mid_channels + 3;
  w2.seed = rng();
  nn::widen(f.m, convs[1] + ".0", w2);  // through the P-activation into the second child
  netmorph::grow_kernel_options g;
  g.new_kernel = 7;
  nn::grow_kernel(f.m, convs[1] + ".2", g);
  netmorph::subnet_options so;
  so.kernels = {5, 1, 1};
  so.widths = {64 + draw(rng, 0, 8), 64 + draw(rng, 0, 8)};
  so.step.seed = rng();
  nn::to_subnet(f.m, convs[2], so);
  REQUIRE(f.error() <= nmtest::exact_tolerance<TestType>());
}

TEST_CASE("a morph carries the SGD velocities over, moved with the channel permutation",
          "[nn][morph][width]") {
  std::mt19937_64 rng(5);
  auto data = synthetic<double>(32, rng);
  nn::architecture_options t;
  t.classes = 3;
  t.batch_norm = true;
  auto m = nn::parse_architecture<double>("(3:6)(3:6)", {1, 8, 8}, t);
  nn::train_epoch(m, data, nn::sgd{0.01, 0.9, 0}, 8);
  const auto convs = named(m, nn::layer_kind::conv2d);
  auto* c0 = nn::layer_cast<nn::conv2d>(&m.find(convs[0]));
  auto* bn = nn::layer_cast<nn::batch_norm>(&m.find(named(m, nn::layer_kind::batch_norm)[0]));
  auto* c1 = nn::layer_cast<nn::conv2d>(&m.find(convs[1]));
  REQUIRE((c0 && bn && c1));
  const auto v0 = c0->weight().velocity, vb = c0->bias().velocity, vg = bn->gamma().velocity,
             v1 = c1->weight().velocity;
  REQUIRE(v0.vector().norm() > 0);
  netmorph::widen_options w;
  w.new_channels = 10;
  w.seed = 9;
  const auto rep = nn::widen(m, convs[0], w);
  REQUIRE(*rep.relative_output_error <= nmtest::exact_tolerance<double>());
  // The morph swapped in new layers: look them up again by name.
  c0 = nn::layer_cast<nn::conv2d>(&m.find(convs[0]));
  bn = nn::layer_cast<nn::batch_norm>(&m.find(named(m, nn::layer_kind::batch_norm)[0]));
  c1 = nn::layer_cast<nn::conv2d>(&m.find(convs[1]));
  const auto& nw = c0->weight();
  int carried = 0, fresh = 0;
  for (idx q = 0; q < 10; ++q) {
    // Velocity rows are either an old row (possibly moved) or zero.
    bool is_old = false;
    for (idx o = 0; o < 6 && !is_old; ++o) {
      bool eq = true;
      for (idx k = 0; k < 9; ++k)
        eq = eq && nw.velocity.data()[q * 9 + k] == v0.data()[o * 9 + k];
      if (eq) {
        is_old = true;
        REQUIRE(c0->bias().velocity(q) == vb(o));
        REQUIRE(bn->gamma().velocity(q) == vg(o));
        for (idx r = 0; r < v1.dim(0); ++r)
          for (idx k = 0; k < 9; ++k)
            REQUIRE(c1->weight().velocity.data()[(r * 10 + q) * 9 + k] ==
                    v1.data()[(r * 6 + o) * 9 + k]);
      }
    }
    bool zero = true;
    for (idx k = 0; k < 9; ++k)
      zero = zero && nw.velocity.data()[q * 9 + k] == 0.0;
    carried += is_old;
    fresh += zero && !is_old;
  }
  REQUIRE(carried == 6);
  REQUIRE(fresh == 4);
  // Training resumes from the carried state and keeps lowering the loss.
  const double loss_before = nn::evaluate(m, data).loss;
  for (int e = 0; e < 3; ++e)
    nn::train_epoch(m, data, nn::sgd{0.01, 0.9, 0}, 8);
  REQUIRE(nn::evaluate(m, data).loss < loss_before);
}

TEST_CASE("a model morph that fails late leaves the model exactly as it was",
          "[nn][morph][error]") {
  SECTION("deepen: Algorithm 1 misses its tolerance after solving") {
    require_untouched<netmorph::numerical_error>("deepen: relative residual", [](auto& m) {
      netmorph::deepen_options d;
      d.algorithm = netmorph::depth_algorithm::general;
      d.k1 = 3;
      d.k2 = 3;
      d.max_iter = 3;
      return nn::deepen(m, "4", d);
    });
  }
  SECTION("deepen inside a parallel path") {
    require_untouched<netmorph::numerical_error>("deepen: relative residual", [](auto& m) {
      netmorph::deepen_options d;
      d.algorithm = netmorph::depth_algorithm::general;
      d.k1 = 3;
      d.k2 = 3;
      d.mid_channels = 2;
      d.max_iter = 2;
      return nn::deepen(m, "res.path0.0", d);
    });
  }
  SECTION("widen: the weight-level morph refuses after the walk and the probes") {
    require_untouched<netmorph::value_error>("widen: cannot shrink from 6 to 5 channels",
                                             [](auto& m) {
                                               netmorph::widen_options w;
                                               w.new_channels = 5;
                                               return nn::widen(m, "0", w);
                                             });
  }
  SECTION("grow_kernel") {
    require_untouched<netmorph::value_error>("grow_kernel: growth from 3 to 4 is odd", [](auto& m) {
      netmorph::grow_kernel_options g;
      g.new_kernel = 4;
      return nn::grow_kernel(m, "4", g);
    });
  }
  SECTION("to_subnet: the chain misses its tolerance after every step was solved") {
    require_untouched<netmorph::numerical_error>("to_subnet: relative residual", [](auto& m) {
      netmorph::subnet_options so;
      so.kernels = {1, 1, 3};
      so.widths = {1, 1};
      so.step.algorithm = netmorph::depth_algorithm::general;
      so.step.max_iter = 3;
      return nn::to_subnet(m, "4", so);
    });
  }
  SECTION("to_stacked_subnet: the second path fails after the first was solved") {
    require_untouched<netmorph::numerical_error>(
        "to_stacked_subnet: path 1: relative residual", [](auto& m) {
          netmorph::stacked_subnet_options st;
          netmorph::subnet_options good, bad;
          good.kernels = {3, 1};
          good.widths = {12};
          bad.kernels = {1, 1, 3};
          bad.widths = {1, 1};
          bad.step.algorithm = netmorph::depth_algorithm::general;
          bad.step.max_iter = 3;
          st.paths = {good, bad};
          return nn::to_stacked_subnet(m, "4", st);
        });
  }
}

TEST_CASE("model morphs refuse layers and options they cannot use", "[nn][morph][error]") {
  std::mt19937_64 rng(12);
  nn::architecture_options t;
  t.act = activation_fn{activation_kind::tanh};
  auto m = nn::parse_architecture<double>("(3:4)", {1, 8, 8}, t);
  // layers: 0 conv, 1 tanh, 2 max pool, 3 flatten, 4 dense
  NM_REQUIRE_THROWS_WITH(nn::deepen(m, 1), netmorph::value_error,
                         "nn::deepen: layer '1' is activation tanh, expected conv2d or dense");
  netmorph::grow_kernel_options g;
  g.new_kernel = 5;
  NM_REQUIRE_THROWS_WITH(nn::grow_kernel(m, 2, g), netmorph::value_error,
                         "nn::grow_kernel: layer '2' is pool2d max 2x2 stride 2, expected conv2d");
  netmorph::subnet_options so;
  so.kernels = {3, 1};
  so.widths = {4};
  NM_REQUIRE_THROWS_WITH(nn::to_subnet(m, "4", so), netmorph::value_error,
                         "nn::to_subnet: layer '4' is dense 64->10, expected conv2d");
  NM_REQUIRE_THROWS_WITH(nn::to_stacked_subnet(m, "3", netmorph::stacked_subnet_options{}),
                         netmorph::value_error,
                         "nn::to_stacked_subnet: layer '3' is flatten, expected conv2d");
  NM_REQUIRE_THROWS_WITH(nn::deepen(m, 9), netmorph::shape_error,
                         "model::at: layer 9 out of range for a model of 5 layers");
  NM_REQUIRE_THROWS_WITH(nn::deepen(m, "features.9"), netmorph::value_error,
                         "model: no layer named 'features.9'");
  // What the model determines is checked, not overwritten.
  netmorph::deepen_options d;
  d.phi = activation_fn{activation_kind::relu};
  NM_REQUIRE_THROWS_WITH(nn::deepen(m, "0", d), netmorph::value_error,
                         "nn::deepen: options.phi is relu but layer '0' is followed by tanh; leave "
                         "phi unset");
  d.phi = activation_fn{activation_kind::tanh};
  REQUIRE(*nn::deepen(m, "0", d).relative_output_error <= nmtest::exact_tolerance<double>());

  // Every refusal of nn::widen.
  netmorph::widen_options w;
  w.new_channels = 12;
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "1", w), netmorph::value_error,
                         "nn::widen: layer '1' is activation tanh, expected conv2d or dense");
  NM_REQUIRE_THROWS_WITH(
      nn::widen(m, "4", w), netmorph::value_error,
      "nn::widen: layer '4' has no conv2d/dense layer after it whose input could "
      "grow: its channels reach the model's output");
  w.phi = activation_fn{activation_kind::sigmoid};
  NM_REQUIRE_THROWS_WITH(nn::widen(m, "0.2", w), netmorph::value_error,
                         "nn::widen: options.phi is sigmoid but layer '0.2' is followed by tanh");
  w.phi.reset();
  // Two batch norms, and a parallel block with an identity path: the channels flow through.
  nn::model<double> two_bn({2, 6, 6});
  two_bn.add(nn::conv2d<double>::he(2, 3, 3, rng));
  two_bn.add(nn::batch_norm<double>(netmorph::batch_norm_weights<double>::identity(3)));
  two_bn.add(nn::batch_norm<double>(netmorph::batch_norm_weights<double>::identity(3)));
  std::vector<nn::layer_list<double>> paths(1);
  two_bn.add(nn::parallel<double>(std::move(paths)), "res");
  two_bn.add(nn::conv2d<double>::he(3, 3, 3, rng));
  const auto r = nn::widen(two_bn, "0", w);
  REQUIRE(r.new_layers == std::vector<std::string>{"0", "1", "2", "4"});
  REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<double>());
  // An identity path from the model's input: the input cannot grow.
  nn::model<double> from_input({3, 6, 6});
  std::vector<nn::layer_list<double>> skip(2);
  skip[0].push_back(std::make_unique<nn::conv2d<double>>(nn::conv2d<double>::he(3, 3, 3, rng)));
  from_input.add(nn::parallel<double>(std::move(skip)), "res");
  from_input.add(nn::conv2d<double>::he(3, 3, 3, rng));
  NM_REQUIRE_THROWS_WITH(nn::widen(from_input, "res.path0.0", w), netmorph::value_error,
                         "nn::widen: the output channels of layer 'res.path0.0' are merged with "
                         "the model's input");
}

TEST_CASE("Net2Net through batch norm, pooling and a flatten carries and divides the velocities",
          "[nn][morph][width]") {
  auto rng = nmtest::make_rng(138);
  nn::model<double> m({2, 6, 6}, rng());
  m.add(nn::conv2d<double>::he(2, 4, 3, rng));
  m.add(nn::batch_norm<double>(netmorph::batch_norm_weights<double>::identity(4)));
  m.add(nn::activation<double>(activation_fn{activation_kind::tanh}));
  m.add(nn::pool2d<double>(nn::pool_mode::max, 2, 2));
  m.add(nn::flatten<double>());
  m.add(nn::dense<double>(nmtest::randn<double>({3, 4 * 9}, rng, 0.1), tensor<double>({3})));
  const nn::dataset<double> d{nmtest::randn<double>({8, 2, 6, 6}, rng), {0, 1, 2, 0, 1, 2, 0, 1}};
  nn::train_epoch(m, d, nn::sgd{0.05, 0.9, 0}, 4);
  const auto* c0 = nn::layer_cast<nn::conv2d>(&m.find("0"));
  const auto* bn = nn::layer_cast<nn::batch_norm>(&m.find("1"));
  const auto* dn = nn::layer_cast<nn::dense>(&m.find("5"));
  const auto w0 = c0->weight().value, v0 = c0->weight().velocity, vd = dn->weight().velocity,
             wd = dn->weight().value, vb = bn->beta().velocity;
  netmorph::widen_options w;
  w.new_channels = 9;
  w.rule = netmorph::width_rule::net2net;
  w.seed = rng();
  const auto rep = nn::widen(m, "0", w);
  REQUIRE(rep.new_layers == std::vector<std::string>{"0", "1", "5"});  // made or changed only
  REQUIRE(*rep.relative_output_error <= nmtest::exact_tolerance<double>());
  c0 = nn::layer_cast<nn::conv2d>(&m.find("0"));
  bn = nn::layer_cast<nn::batch_norm>(&m.find("1"));
  dn = nn::layer_cast<nn::dense>(&m.find("5"));
  // Every new channel replicates an old one (found by its weights); its velocity follows the
  // gradient (docs/DESIGN.md §8.4): the incoming and batch-norm velocity are the old channel's
  // divided by its number of copies, the H*W outgoing columns are copied (the weights there are
  // divided).
  std::vector<idx> src(9, -1), copies(4, 0);
  for (idx q = 0; q < 9; ++q)
    for (idx o = 0; o < 4 && src[q] < 0; ++o) {
      bool eq = true;
      for (idx k = 0; k < 18; ++k)
        eq = eq && c0->weight().value.data()[q * 18 + k] == w0.data()[o * 18 + k];
      if (eq) src[q] = o;
    }
  for (idx q = 0; q < 9; ++q) {
    REQUIRE(src[q] >= 0);
    ++copies[src[q]];
  }
  for (idx q = 0; q < 9; ++q) {
    const idx s = src[q];
    CAPTURE(q, s);
    for (idx k = 0; k < 18; ++k)
      REQUIRE(c0->weight().velocity.data()[q * 18 + k] ==
              Approx(v0.data()[s * 18 + k] / double(copies[s])).epsilon(1e-15));
    REQUIRE(bn->beta().velocity(q) == Approx(vb(s) / double(copies[s])).epsilon(1e-15));
    for (idx g = 0; g < 3; ++g)
      for (idx t = 0; t < 9; ++t) {
        REQUIRE(dn->weight().velocity(g, q * 9 + t) == vd(g, s * 9 + t));
        REQUIRE(dn->weight().value(g, q * 9 + t) ==
                Approx(wd(g, s * 9 + t) / double(copies[s])).epsilon(1e-15));
      }
  }
}

TEMPLATE_TEST_CASE("nn::widen through adaptive pooling keeps the function on random shapes",
                   "[nn][morph][width]", float, double) {
  // torchvision's VGG and ResNet heads: conv -> act -> adaptive_pool2d -> flatten -> dense, the
  // bins uneven (H not a multiple of the output size) and padded convolutions with biases; and
  // conv -> adaptive_pool2d -> conv. Both rules, checked on fresh inputs against the parent.
  auto rng = nmtest::make_rng(139);
  for (int trial = 0; trial < 6; ++trial) {
    const idx c_in = draw(rng, 1, 3), c = draw(rng, 2, 5), h = draw(rng, 5, 9), w = draw(rng, 5, 9);
    const idx oh = draw(rng, 1, 4), ow = draw(rng, 1, 4), classes = draw(rng, 2, 5);
    const bool conv_next = trial % 2 == 1;
    CAPTURE(trial, c_in, c, h, w, oh, ow, conv_next);
    nn::model<TestType> m({c_in, h, w}, rng());
    m.add(nn::conv2d<TestType>(nmtest::randn<TestType>({c, c_in, 3, 3}, rng),
                               nmtest::randn<TestType>({c}, rng), netmorph::conv2d_options{1, 1}));
    m.add(nn::activation<TestType>(activation_fn{activation_kind::relu}));
    m.add(nn::adaptive_pool2d<TestType>(oh, ow), "pool");
    if (conv_next) {
      m.add(nn::conv2d<TestType>(nmtest::randn<TestType>({classes, c, 3, 3}, rng),
                                 nmtest::randn<TestType>({classes}, rng),
                                 netmorph::conv2d_options{1, 1}));
    } else {
      m.add(nn::flatten<TestType>());
      m.add(nn::dense<TestType>(nmtest::randn<TestType>({classes, c * oh * ow}, rng),
                                nmtest::randn<TestType>({classes}, rng)));
    }
    const tensor<TestType> x = nmtest::randn<TestType>({4, c_in, h, w}, rng);
    const tensor<TestType> y = m.forward(x, false);
    netmorph::widen_options o;
    o.new_channels = c + draw(rng, 1, 4);
    o.rule = trial % 3 == 2 ? netmorph::width_rule::net2net : netmorph::width_rule::netmorph;
    o.seed = rng();
    const auto rep = nn::widen(m, "0", o);
    REQUIRE(*rep.relative_output_error <= nmtest::exact_tolerance<TestType>());
    REQUIRE(netmorph::relative_error(m.forward(x, false), y) <=
            nmtest::exact_tolerance<TestType>());
    REQUIRE(nn::layer_cast<nn::conv2d>(&m.find("0"))->weight().value.dim(0) == o.new_channels);
  }
}

TEST_CASE("a model moved or copied between forward and backward back-propagates the same",
          "[nn][train]") {
  auto rng = nmtest::make_rng(139);
  nn::model<double> m({2, 6, 6});
  m.add(nn::conv2d<double>::he(2, 3, 3, rng));
  std::vector<nn::layer_list<double>> paths(2);
  paths[0].push_back(std::make_unique<nn::conv2d<double>>(nmtest::randn<double>({3, 3, 3, 3}, rng),
                                                          nmtest::randn<double>({3}, rng),
                                                          netmorph::conv2d_options{1, 1}));
  m.add(nn::parallel<double>(std::move(paths)), "res");
  m.add(nn::flatten<double>());
  const auto x = nmtest::randn<double>({2, 2, 6, 6}, rng);
  const auto dy = nmtest::randn<double>({2, 3 * 36}, rng);
  auto reference = m;
  reference.forward(x, true);
  reference.backward(dy);
  const auto want = state_of(reference);

  auto check = [&](nn::model<double>& other) {
    const auto got = state_of(other);
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      REQUIRE(netmorph::relative_error(got[i], want[i]) <= nmtest::reorder_tolerance());
  };
  {
    auto a = m;
    a.forward(x, true);
    nn::model<double> b = std::move(a);  // the model's input copy must move with it
    b.backward(dy);
    check(b);
  }
  {
    auto a = m, other = m;
    a.forward(x, true);
    std::swap(a, other);
    other.backward(dy);
    check(other);
  }
  {
    auto a = m;
    a.forward(x, true);
    auto copy = a;  // the parallel block's copy back-propagates too
    a.forward(nmtest::randn<double>({2, 2, 6, 6}, rng), true);
    copy.backward(dy);
    check(copy);
  }
}

TEST_CASE("model morphs check the options the model determines", "[nn][morph][error]") {
  std::mt19937_64 rng(13);
  nn::architecture_options t;
  t.act = activation_fn{activation_kind::tanh};
  auto m = nn::parse_architecture<double>("(3:4)(3:4)", {1, 8, 8}, t);
  netmorph::deepen_options d;
  d.phi = activation_fn{activation_kind::tanh, 0.0};  // tanh has no parameter: any value agrees
  REQUIRE(*nn::deepen(m, "0", d).relative_output_error <= nmtest::exact_tolerance<double>());
  d.probe.size = 5;
  NM_REQUIRE_THROWS_WITH(nn::deepen(m, "3", d), netmorph::value_error,
                         "nn::deepen: probe.size is 5 but a model is probed at its input shape");
  d.probe = netmorph::probe_options{-1, 0};
  NM_REQUIRE_THROWS_WITH(nn::deepen(m, "3", d), netmorph::value_error,
                         "nn::deepen: probe.count must be >= 0, got -1");
  // No activation between the layers: the model determines the identity.
  nn::model<double> plain({2, 6, 6});
  plain.add(nn::conv2d<double>::he(2, 3, 3, rng));
  plain.add(nn::conv2d<double>::he(3, 3, 3, rng));
  netmorph::widen_options w;
  w.new_channels = 5;
  w.phi = activation_fn{activation_kind::relu};
  NM_REQUIRE_THROWS_WITH(nn::widen(plain, "0", w), netmorph::value_error,
                         "nn::widen: options.phi is relu but layer '0' is followed by identity");
  // Two activations between: only their value at zero matters, and it must agree.
  nn::model<double> two({2, 6, 6});
  two.add(nn::conv2d<double>::he(2, 3, 3, rng));
  two.add(nn::activation<double>(activation_fn{activation_kind::tanh}));
  two.add(nn::activation<double>(activation_fn{activation_kind::sigmoid}));
  two.add(nn::conv2d<double>::he(3, 3, 3, rng));
  NM_REQUIRE_THROWS_WITH(nn::widen(two, "0", w), netmorph::value_error,
                         "nn::widen: options.phi relu disagrees with the activations after layer "
                         "'0'");
  w.phi = activation_fn{activation_kind::sigmoid};
  REQUIRE(*nn::widen(two, "0", w).relative_output_error <= nmtest::exact_tolerance<double>());
}

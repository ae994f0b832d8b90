#include "support/test_support.hpp"

#include <netmorph/nn.hpp>

#include <sstream>

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::tensor;
using nmtest::draw;
using nmtest::idx;
namespace nn = netmorph::nn;

namespace {

/// Two Gaussian blobs per class in 1x8x8 images: a small task a conv net learns in a few epochs.
template <typename Scalar>
nn::dataset<Scalar> synthetic(idx n, std::mt19937_64& rng) {
  nn::dataset<Scalar> d{tensor<Scalar>({n, 1, 8, 8}), {}};
  std::normal_distribution<double> noise(0.0, 0.5);
  for (idx s = 0; s < n; ++s) {
    const int y = static_cast<int>(s % 3);
    d.labels.push_back(y);
    for (idx i = 0; i < 8; ++i)
      for (idx j = 0; j < 8; ++j) {
        const double signal = (y == 0 ? i < 4 : y == 1 ? j < 4 : (i + j) % 2 == 0) ? 1.0 : -1.0;
        d.x(s, 0, i, j) = static_cast<Scalar>(signal + noise(rng));
      }
  }
  return d;
}

}  // namespace

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

TEMPLATE_TEST_CASE("every morph operation on (5:32)(5:32)(5:64) keeps the network's function",
                   "[nn][morph]", float, double) {
  const double tol = nmtest::exact_tolerance<TestType>();
  nn::architecture_options t;
  t.dense_head = {64};
  t.batch_norm = true;
  t.act = activation_fn{activation_kind::tanh};
  t.seed = 11;
  auto m = nn::parse_architecture<TestType>("(5:32)(5:32)(5:64)", {1, 28, 28}, t);
  REQUIRE(nn::to_notation(m) == "(5:32)(5:32)(5:64)");
  // Give the batch norms non-trivial running statistics, as after training.
  std::mt19937_64 rng(4);
  auto warm = nmtest::randn<TestType>({8, 1, 28, 28}, rng);
  m.forward(warm, true);
  auto x = nmtest::randn<TestType>({3, 1, 28, 28}, rng);
  const auto y = m.forward(x, false);

  netmorph::deepen_options d;
  d.k1 = 5;
  d.k2 = 1;
  d.mid_channels = 4 * 32;
  auto r1 = nn::deepen(m, 4, d);  // the second conv (layers: conv bn act pool conv ...)
  CAPTURE(r1.detail);
  REQUIRE(r1.relative_output_error <= tol);
  REQUIRE(nn::to_notation(m) == "(5:32)[(5:128)(1:32)](5:64)");

  netmorph::widen_options w;
  w.new_channels = 48;
  auto r2 = nn::widen(m, 0, w);  // through batch norm and tanh into the deepened conv
  REQUIRE(r2.relative_output_error <= tol);

  auto r3 = nn::grow_kernel(m, 0, 7);
  REQUIRE(r3.relative_output_error <= tol);

  netmorph::stacked_subnet_options st;
  netmorph::subnet_options path;
  path.kernels = {5, 1};
  path.widths = {80};
  st.paths = {path, path};
  const idx last_conv = [&] {
    idx k = 0;
    for (idx i = 0; i < m.size(); ++i)
      if (m.at(i).kind() == "conv2d") k = i;
    return k;
  }();
  auto r4 = nn::to_stacked_subnet(m, last_conv, st);
  REQUIRE(r4.relative_output_error <= tol);

  // The dense head: widen it through the flatten -> dense -> tanh -> dense chain, and deepen it.
  idx first_dense = 0;
  for (idx i = 0; i < m.size(); ++i)
    if (m.at(i).kind() == "dense") {
      first_dense = i;
      break;
    }
  netmorph::widen_options wd;
  wd.new_channels = 80;
  wd.rule = netmorph::width_rule::net2net;
  REQUIRE(nn::widen(m, first_dense, wd).relative_output_error <= tol);
  netmorph::deepen_options dd;
  dd.mid_channels = 96;
  REQUIRE(nn::deepen(m, first_dense, dd, true).relative_output_error <= tol);

  const auto z = m.forward(x, false);
  REQUIRE(netmorph::relative_error(z, y) <= tol);
  REQUIRE(nn::to_notation(m).find("{(5:80)(1:64)+(5:80)(1:64)}") != std::string::npos);
}

TEST_CASE("a morph carries the SGD velocities over, moved with the channel permutation",
          "[nn][morph]") {
  std::mt19937_64 rng(5);
  auto data = synthetic<double>(32, rng);
  nn::architecture_options t;
  t.classes = 3;
  t.batch_norm = true;
  auto m = nn::parse_architecture<double>("(3:6)(3:6)", {1, 8, 8}, t);
  nn::train_epoch(m, data, nn::sgd{0.01, 0.9, 0}, 8);
  auto* c0 = dynamic_cast<nn::conv2d<double>*>(&m.at(0));
  auto* bn = dynamic_cast<nn::batch_norm<double>*>(&m.at(1));
  auto* c1 = dynamic_cast<nn::conv2d<double>*>(&m.at(4));
  REQUIRE((c0 && bn && c1));
  const auto v0 = c0->weight().velocity, vb = c0->bias().velocity, vg = bn->gamma().velocity,
             v1 = c1->weight().velocity;
  REQUIRE(v0.vector().norm() > 0);
  netmorph::widen_options w;
  w.new_channels = 10;
  w.seed = 9;
  auto rep = nn::widen(m, 0, w);
  REQUIRE(rep.relative_output_error <= 1e-9);
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
  // Training resumes from the carried state.
  const double loss_before = nn::evaluate(m, data).loss;
  nn::train_epoch(m, data, nn::sgd{0.01, 0.9, 0}, 8);
  REQUIRE(std::isfinite(nn::evaluate(m, data).loss));
  REQUIRE(nn::evaluate(m, data).loss < loss_before * 1.5);
}

TEST_CASE("the architecture notation round-trips and names the position of errors",
          "[nn][notation]") {
  nn::architecture_options t;
  auto m = nn::parse_architecture<double>("[(5:32x4)(1:32)]x2[(5:64x4)(1:64)]", {1, 28, 28}, t);
  REQUIRE(nn::to_notation(m) == "[(5:32x4)(1:32)]x2[(5:64x4)(1:64)]");
  idx convs = 0, pools = 0;
  for (idx i = 0; i < m.size(); ++i) {
    convs += m.at(i).kind() == "conv2d";
    pools += m.at(i).kind() == "max_pool";
  }
  REQUIRE(convs == 15);
  REQUIRE(pools == 3);
  REQUIRE(m.output_shape() == netmorph::shape_type{10});
  auto q = nn::parse_architecture<float>(" (3:16) ( 3 : 16 x 2 ) ", {3, 16, 16}, t);
  REQUIRE(nn::to_notation(q) == "(3:16)[(3:16x2)]");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5 32)", {1, 28, 28}),
                         netmorph::value_error,
                         "parse_architecture: expected ':' at position 3 ('3') in '(5 32)'");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5:32", {1, 28, 28}),
                         netmorph::value_error,
                         "parse_architecture: expected ')' at position 5 (end) in '(5:32'");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5:0)", {1, 28, 28}),
                         netmorph::value_error,
                         "parse_architecture: expected a channel count >= 1 at position 3");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5:32)x", {1, 28, 28}),
                         netmorph::value_error,
                         "parse_architecture: expected '(' or '[' at position 6 ('x')");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("[]", {1, 28, 28}), netmorph::value_error,
                         "parse_architecture: empty group before position 2");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("", {1, 28, 28}), netmorph::value_error,
                         "parse_architecture: no layers in ''");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5:32)", {28, 28}), netmorph::shape_error,
                         "parse_architecture: input must be (C, H, W), got (28, 28)");
}

TEST_CASE("morph operations refuse layers they cannot morph", "[nn][morph][error]") {
  auto m = nn::parse_architecture<double>("(3:4)", {1, 8, 8});
  NM_REQUIRE_THROWS_WITH(nn::deepen(m, 1), netmorph::value_error,
                         "nn::deepen: layer 1 is relu, expected conv2d or dense");
  NM_REQUIRE_THROWS_WITH(nn::grow_kernel(m, 2, 5), netmorph::value_error,
                         "nn::grow_kernel: layer 2 is max_pool, expected conv2d");
  netmorph::widen_options w;
  w.new_channels = 2;
  NM_REQUIRE_THROWS_WITH(nn::widen(m, 0, w), netmorph::value_error,
                         "widen: cannot shrink from 4 to 2 channels");
  w.new_channels = 12;
  NM_REQUIRE_THROWS_WITH(
      nn::widen(m, 4, w), netmorph::value_error,
      "nn::widen: layer 4 has no following conv2d/dense layer whose input could grow");
  NM_REQUIRE_THROWS_WITH(nn::deepen(m, 9), netmorph::shape_error,
                         "model::at: layer 9 out of range for a model of 5 layers");
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

TEMPLATE_TEST_CASE("nn::to_subnet replaces a conv by a P-activated chain and keeps the function",
                   "[nn][morph]", float, double) {
  nn::architecture_options t;
  t.act = activation_fn{activation_kind::sigmoid};
  auto m = nn::parse_architecture<TestType>("(3:4)(3:6)", {2, 8, 8}, t);
  std::mt19937_64 rng(31);
  auto x = nmtest::randn<TestType>({2, 2, 8, 8}, rng);
  const auto y = m.forward(x, false);
  netmorph::subnet_options so;
  so.kernels = {3, 1, 1};
  so.widths = {6, 8};
  const idx before = m.size();
  auto r = nn::to_subnet(m, 3, so);  // the second convolution
  REQUIRE(m.size() == before + 4);   // three convs and two P-activations replace one conv
  REQUIRE(m.at(4).kind() == "p_sigmoid");
  REQUIRE(r.relative_output_error <= nmtest::exact_tolerance<TestType>());
  REQUIRE(netmorph::relative_error(m.forward(x, false), y) <= nmtest::exact_tolerance<TestType>());
  NM_REQUIRE_THROWS_WITH(nn::to_subnet(m, 1, so), netmorph::value_error,
                         "nn::to_subnet: layer 1 is sigmoid, expected conv2d");
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

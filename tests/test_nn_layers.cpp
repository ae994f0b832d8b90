#include "support/test_support.hpp"

#include <netmorph/nn/model.hpp>

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::tensor;
using nmtest::draw;
using nmtest::idx;
namespace nn = netmorph::nn;

namespace {

/// L = sum(r * layer(x)); checks dL/dx and dL/d(every parameter) against central differences.
void check_gradients(nn::layer<double>& l, tensor<double> x, std::mt19937_64& rng,
                     bool training = true) {
  const tensor<double> y0 = l.forward(x, training);
  const tensor<double> r = nmtest::randn<double>(y0.shape(), rng);
  for (auto* p : l.parameters())
    std::fill(p->grad.begin(), p->grad.end(), 0.0);
  l.forward(x, training);
  const tensor<double> dx = l.backward(r);
  auto loss = [&]() {
    const tensor<double> y = l.forward(x, training);
    double s = 0;
    for (idx i = 0; i < y.size(); ++i)
      s += r.data()[i] * y.data()[i];
    return s;
  };
  const double h = 1e-6;
  auto check = [&](tensor<double>& v, const tensor<double>& analytic, const char* what) {
    for (idx i = 0; i < v.size(); ++i) {
      const double keep = v.data()[i];
      v.data()[i] = keep + h;
      const double lp = loss();
      v.data()[i] = keep - h;
      const double lm = loss();
      v.data()[i] = keep;
      CAPTURE(l.kind(), what, i);
      REQUIRE(analytic.data()[i] == Approx((lp - lm) / (2 * h)).epsilon(1e-5).margin(1e-6));
    }
  };
  check(x, dx, "input");
  for (auto* p : l.parameters()) {
    const tensor<double> g = p->grad;
    check(p->value, g, p->name.c_str());
  }
}

}  // namespace

TEST_CASE("conv2d and dense gradients match finite differences", "[nn][gradient]") {
  auto rng = nmtest::make_rng(110);
  for (int trial = 0; trial < 6; ++trial) {
    const idx ci = draw(rng, 1, 3), co = draw(rng, 1, 3), k = draw(rng, 1, 3), s = draw(rng, 1, 2),
              p = draw(rng, 0, 1);
    CAPTURE(trial, ci, co, k, s, p);
    nn::conv2d<double> c(nmtest::randn<double>({co, ci, k, k}, rng),
                         nmtest::randn<double>({co}, rng), {s, p});
    check_gradients(c, nmtest::randn<double>({2, ci, 5, 4}, rng), rng);
    nn::dense<double> d(nmtest::randn<double>({co, ci * 3}, rng), nmtest::randn<double>({co}, rng));
    check_gradients(d, nmtest::randn<double>({3, ci * 3}, rng), rng);
  }
}

TEST_CASE("conv2d gradients match finite differences on the shifted-rows and col2im routes",
          "[nn][gradient]") {
  auto rng = nmtest::make_rng(115);
  for (int trial = 0; trial < 4; ++trial) {
    // C_in * K >= 16 at stride 1 takes the shifted-rows kernels; a padding above K - 1 sends the
    // input gradient through col2im.
    const idx ci = draw(rng, 4, 6), co = draw(rng, 1, 3), k = draw(rng, 4, 5),
              p = trial % 2 == 0 ? draw(rng, 0, k - 1) : k;
    CAPTURE(trial, ci, co, k, p);
    nn::conv2d<double> c(nmtest::randn<double>({co, ci, k, k}, rng),
                         nmtest::randn<double>({co}, rng), {1, p});
    check_gradients(c, nmtest::randn<double>({3, ci, 6, 5}, rng), rng);
  }
}

TEST_CASE("pooling, flatten, batch norm and dropout gradients match finite differences",
          "[nn][gradient]") {
  auto rng = nmtest::make_rng(111);
  nn::pool2d<double> mp(nn::pool2d<double>::mode::max, 2, 2),
      ap(nn::pool2d<double>::mode::average, 3, 2);
  check_gradients(mp, nmtest::randn<double>({2, 2, 6, 5}, rng), rng);
  check_gradients(ap, nmtest::randn<double>({2, 2, 7, 7}, rng), rng);
  nn::pool2d<double> mp_overlap(nn::pool2d<double>::mode::max, 3, 2);  // windows share inputs
  check_gradients(mp_overlap, nmtest::randn<double>({2, 3, 7, 6}, rng), rng);
  nn::flatten<double> f;
  check_gradients(f, nmtest::randn<double>({2, 3, 2, 2}, rng), rng);
  auto bnp = netmorph::batch_norm_weights<double>::identity(3);
  bnp.gamma = nmtest::randn<double>({3}, rng);
  bnp.beta = nmtest::randn<double>({3}, rng);
  nn::batch_norm<double> bn_train(bnp), bn_eval(bnp);
  check_gradients(bn_train, nmtest::randn<double>({4, 3, 2, 3}, rng), rng, true);
  // Inference mode uses the running statistics.
  auto xe = nmtest::randn<double>({4, 3, 2, 3}, rng);
  REQUIRE(netmorph::relative_error(bn_eval.forward(xe, false),
                                   netmorph::batch_norm_inference(xe, bnp)) <= 1e-14);
  nn::batch_norm<double> bn_dense(bnp);
  check_gradients(bn_dense, nmtest::randn<double>({5, 3}, rng), rng, true);
  // Dropout with a fixed mask: reseed before every forward so the finite differences see it.
  nn::dropout<double> d(0.3);
  std::mt19937_64 drng(5);
  struct reseeding : nn::layer<double> {
    nn::dropout<double>* d;
    std::mt19937_64* g;
    std::string kind() const override { return "dropout"; }
    netmorph::shape_type output_shape(const netmorph::shape_type& s) const override { return s; }
    tensor<double> forward(const tensor<double>& x, bool t) override {
      *g = std::mt19937_64(5);
      return d->forward(x, t);
    }
    tensor<double> backward(const tensor<double>& dy) override { return d->backward(dy); }
    std::unique_ptr<nn::layer<double>> clone() const override { return nullptr; }
  } rd;
  d.set_rng(&drng);
  rd.d = &d;
  rd.g = &drng;
  check_gradients(rd, nmtest::randn<double>({3, 4}, rng), rng);
  REQUIRE(d.forward(tensor<double>({2}, 1.0), false) == tensor<double>({2}, 1.0));
}

TEST_CASE("activation and P-activation gradients (including d/da) match finite differences",
          "[nn][gradient]") {
  auto rng = nmtest::make_rng(112);
  for (activation_kind k : nmtest::all_activation_kinds()) {
    auto x = nmtest::randn<double>({3, 5}, rng);
    for (double& v : x)
      if (std::abs(v) < 1e-3) v += 0.01;  // away from kinks
    nn::activation<double> a(activation_fn{k, 0.2});
    check_gradients(a, x, rng);
    nn::p_activation<double> p(netmorph::make_p_activation(activation_fn{k, 0.2}, 0.37));
    check_gradients(p, x, rng);
  }
}

TEST_CASE("parallel blocks sum their paths in both directions", "[nn][gradient]") {
  auto rng = nmtest::make_rng(113);
  std::vector<nn::layer_list<double>> paths(3);
  paths[0].push_back(std::make_unique<nn::conv2d<double>>(nmtest::randn<double>({2, 2, 3, 3}, rng),
                                                          nmtest::randn<double>({2}, rng),
                                                          netmorph::conv2d_options{1, 1}));
  paths[1].push_back(std::make_unique<nn::conv2d<double>>(
      nmtest::randn<double>({2, 2, 1, 1}, rng), tensor<double>(), netmorph::conv2d_options{}));
  paths[1].push_back(
      std::make_unique<nn::activation<double>>(activation_fn{activation_kind::tanh}));
  // paths[2] empty: the identity shortcut of a residual block.
  nn::parallel<double> par(std::move(paths));
  check_gradients(par, nmtest::randn<double>({2, 2, 4, 4}, rng), rng);
}

TEST_CASE("softmax cross-entropy gradient matches finite differences", "[nn][gradient]") {
  auto rng = nmtest::make_rng(114);
  auto z = nmtest::randn<double>({4, 5}, rng);
  const std::vector<int> y{0, 3, 4, 1};
  auto r = nn::softmax_cross_entropy(z, y);
  for (idx i = 0; i < z.size(); ++i) {
    const double keep = z.data()[i], h = 1e-6;
    z.data()[i] = keep + h;
    const double lp = nn::softmax_cross_entropy(z, y).loss;
    z.data()[i] = keep - h;
    const double lm = nn::softmax_cross_entropy(z, y).loss;
    z.data()[i] = keep;
    REQUIRE(r.grad.data()[i] == Approx((lp - lm) / (2 * h)).epsilon(1e-6).margin(1e-8));
  }
  NM_REQUIRE_THROWS_WITH(nn::softmax_cross_entropy(z, {0, 1}), netmorph::shape_error,
                         "softmax_cross_entropy: 2 labels for 4 samples");
  NM_REQUIRE_THROWS_WITH(nn::softmax_cross_entropy(z, {0, 1, 2, 5}), netmorph::value_error,
                         "softmax_cross_entropy: label 5 of sample 3 is outside [0, 5)");
}

TEST_CASE("layers reject bad configurations with named messages", "[nn][error]") {
  NM_REQUIRE_THROWS_WITH(nn::dropout<double>(1.0), netmorph::value_error,
                         "nn::dropout: p must be in [0, 1), got 1");
  NM_REQUIRE_THROWS_WITH(nn::pool2d<double>(nn::pool2d<double>::mode::max, 0, 1),
                         netmorph::value_error,
                         "nn::pool2d: window and stride must be >= 1, got 0 and 1");
  NM_REQUIRE_THROWS_WITH(nn::conv2d<double>(tensor<double>({2, 3, 3, 3}), tensor<double>({3}), {}),
                         netmorph::shape_error, "nn::conv2d: bias must have shape (2), got (3)");
  NM_REQUIRE_THROWS_WITH(nn::p_activation<double>(netmorph::p_activation_fn{activation_fn{}, 2.0}),
                         netmorph::value_error, "make_p_activation: a must be in [0, 1], got 2");
  nn::model<double> m({1, 8, 8});
  m.add(nn::conv2d<double>(tensor<double>({4, 1, 3, 3}), tensor<double>({4}), {1, 1}));
  NM_REQUIRE_THROWS_WITH(m.add(nn::dense<double>(tensor<double>({2, 5}), tensor<double>())),
                         netmorph::shape_error,
                         "nn::dense: expected a rank-1 input, got shape (4, 8, 8)");
  NM_REQUIRE_THROWS_WITH(m.forward(tensor<double>({2, 2, 8, 8})), netmorph::shape_error,
                         "model::forward: input shape (2, 2, 8, 8), expected (2, 1, 8, 8)");
  nn::conv2d<double> c(tensor<double>({4, 1, 3, 3}), tensor<double>({4}), {1, 1});
  NM_REQUIRE_THROWS_WITH(
      c.backward(tensor<double>({2, 4, 8, 8})), netmorph::error,
      "nn::conv2d::backward: no cached input (call forward with training = true)");
  c.forward(tensor<double>({2, 1, 8, 8}), true);
  NM_REQUIRE_THROWS_WITH(c.backward(tensor<double>({2, 4, 8, 7})), netmorph::shape_error,
                         "nn::conv2d::backward: gradient has shape (2, 4, 8, 7), the output has "
                         "(2, 4, 8, 8)");
  nn::pool2d<double> mp(nn::pool2d<double>::mode::max, 2, 2);
  mp.forward(tensor<double>({2, 4, 8, 8}), true);
  NM_REQUIRE_THROWS_WITH(mp.backward(tensor<double>({2, 4, 8, 8})), netmorph::shape_error,
                         "nn::pool2d::backward: gradient has shape (2, 4, 8, 8), the output has "
                         "(2, 4, 4, 4)");
  nn::dense<double> d(tensor<double>({3, 5}), tensor<double>());
  d.forward(tensor<double>({2, 5}), true);
  NM_REQUIRE_THROWS_WITH(d.backward(tensor<double>({2, 4})), netmorph::shape_error,
                         "nn::dense::backward: gradient has shape (2, 4), the output has (2, 3)");
  nn::flatten<double> f;
  f.forward(tensor<double>({2, 3, 2, 2}), true);
  NM_REQUIRE_THROWS_WITH(f.backward(tensor<double>({2, 11})), netmorph::shape_error,
                         "nn::flatten::backward: gradient has shape (2, 11), the input has "
                         "(2, 3, 2, 2)");
}

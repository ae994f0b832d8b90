#include "support/test_support.hpp"

#include <netmorph/nn/model.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

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
      CAPTURE(l.describe(), what, i);
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
  nn::pool2d<double> mp(nn::pool_mode::max, 2, 2), ap(nn::pool_mode::average, 3, 2);
  check_gradients(mp, nmtest::randn<double>({2, 2, 6, 5}, rng), rng);
  check_gradients(ap, nmtest::randn<double>({2, 2, 7, 7}, rng), rng);
  nn::pool2d<double> mp_overlap(nn::pool_mode::max, 3, 2);  // windows share inputs
  check_gradients(mp_overlap, nmtest::randn<double>({2, 3, 7, 6}, rng), rng);
  // Padded windows (ResNet's 3x3 stride-2 max pool with padding 1) and padded averages.
  nn::pool2d<double> mp_pad(nn::pool_mode::max, 3, 2, 1), ap_pad(nn::pool_mode::average, 3, 1, 1);
  check_gradients(mp_pad, nmtest::randn<double>({2, 2, 7, 6}, rng), rng);
  check_gradients(ap_pad, nmtest::randn<double>({2, 2, 5, 4}, rng), rng);
  // Adaptive bins that divide, overlap (7 -> 3) and repeat (2 -> 5) the input.
  for (auto out : {std::pair<idx, idx>{1, 1}, {3, 2}, {5, 4}}) {
    nn::adaptive_pool2d<double> a(out.first, out.second);
    check_gradients(a, nmtest::randn<double>({2, 2, 7, 2}, rng), rng);
  }
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
                                   netmorph::batch_norm_inference(xe, bnp)) <=
          nmtest::reorder_tolerance());
  nn::batch_norm<double> bn_dense(bnp);
  check_gradients(bn_dense, nmtest::randn<double>({5, 3}, rng), rng, true);
  // Dropout with a fixed mask: reseed before every forward so the finite differences see it.
  nn::dropout<double> d(0.3);
  std::mt19937_64 drng(5);
  struct reseeding : nn::layer<double> {
    nn::dropout<double>* d;
    std::mt19937_64* g;
    nn::layer_kind kind() const override { return nn::layer_kind::dropout; }
    std::string describe() const override { return "reseeding dropout"; }
    netmorph::shape_type output_shape(const netmorph::shape_type& s) const override { return s; }
    void forward_into(const tensor<double>& x, tensor<double>& y, bool t) override {
      *g = std::mt19937_64(5);
      d->forward_into(x, y, t);
    }
    void backward_into(const tensor<double>& dy, tensor<double>& dx) override {
      d->backward_into(dy, dx);
    }
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
      v = nmtest::away_from_kinks(v);
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

TEST_CASE("parallel blocks concatenate and multiply their paths in both directions",
          "[nn][gradient]") {
  auto rng = nmtest::make_rng(114);
  const auto conv = [&](idx in, idx out, idx k) {
    return std::make_unique<nn::conv2d<double>>(nmtest::randn<double>({out, in, k, k}, rng),
                                                nmtest::randn<double>({out}, rng),
                                                netmorph::conv2d_options{1, (k - 1) / 2});
  };
  const tensor<double> x = nmtest::randn<double>({2, 3, 4, 4}, rng);
  // concat: a 3x3 path (2 channels), the identity (3) and a tanh'ed 1x1 path (1), in this order.
  std::vector<nn::layer_list<double>> paths(3);
  paths[0].push_back(conv(3, 2, 3));
  paths[2].push_back(conv(3, 1, 1));
  paths[2].push_back(
      std::make_unique<nn::activation<double>>(activation_fn{activation_kind::tanh}));
  nn::parallel<double> cat(std::move(paths), nn::merge_kind::concat);
  REQUIRE(cat.output_shape({3, 4, 4}) == netmorph::shape_type{6, 4, 4});
  REQUIRE(cat.describe() == "parallel 3 paths (1 layers, 0 layers, 2 layers) concat");
  {
    const tensor<double> y = cat.forward(x, false);
    const tensor<double> a = cat.paths()[0][0]->forward(x, false);
    const tensor<double> b =
        cat.paths()[2][1]->forward(cat.paths()[2][0]->forward(x, false), false);
    for (idx n = 0; n < 2; ++n)
      for (idx i = 0; i < 4; ++i)
        for (idx j = 0; j < 4; ++j) {
          REQUIRE(y(n, 0, i, j) == a(n, 0, i, j));
          REQUIRE(y(n, 1, i, j) == a(n, 1, i, j));
          for (idx c = 0; c < 3; ++c)
            REQUIRE(y(n, 2 + c, i, j) == x(n, c, i, j));
          REQUIRE(y(n, 5, i, j) == b(n, 0, i, j));
        }
  }
  check_gradients(cat, x, rng);
  // mul: the identity times a squeeze-and-excitation gate (3, 1, 1) and a full-size path.
  std::vector<nn::layer_list<double>> gate(3);
  gate[1].push_back(std::make_unique<nn::adaptive_pool2d<double>>(1, 1));
  gate[1].push_back(conv(3, 3, 1));
  gate[1].push_back(
      std::make_unique<nn::activation<double>>(activation_fn{activation_kind::sigmoid}));
  gate[2].push_back(conv(3, 3, 3));
  nn::parallel<double> mul(std::move(gate), nn::merge_kind::mul);
  REQUIRE(mul.output_shape({3, 4, 4}) == netmorph::shape_type{3, 4, 4});
  {
    const tensor<double> y = mul.forward(x, false);
    const tensor<double> g = mul.paths()[1][2]->forward(
        mul.paths()[1][1]->forward(mul.paths()[1][0]->forward(x, false), false), false);
    const tensor<double> f = mul.paths()[2][0]->forward(x, false);
    for (idx n = 0; n < 2; ++n)
      for (idx c = 0; c < 3; ++c)
        for (idx i = 0; i < 4; ++i)
          for (idx j = 0; j < 4; ++j)
            REQUIRE(y(n, c, i, j) == Approx(x(n, c, i, j) * g(n, c, 0, 0) * f(n, c, i, j)));
  }
  check_gradients(mul, x, rng);
  // A copy taken between forward and backward back-propagates like the original, and an
  // inference pass in between changes neither.
  for (nn::parallel<double>* b : {&cat, &mul}) {
    const tensor<double> y = b->forward(x, true);
    nn::parallel<double> copy = *b;
    b->forward(nmtest::randn<double>({1, 3, 4, 4}, rng), false);
    const tensor<double> dy = nmtest::randn<double>(y.shape(), rng);
    REQUIRE(copy.backward(dy) == b->backward(dy));
  }
  // Broadcasting: a gate first, and factors of which none has the full shape.
  std::vector<nn::layer_list<double>> cross(2);
  cross[0].push_back(std::make_unique<nn::adaptive_pool2d<double>>(1, 1));
  cross[1].push_back(conv(3, 1, 1));
  nn::parallel<double> outer(std::move(cross), nn::merge_kind::mul);
  REQUIRE(outer.output_shape({3, 4, 4}) == netmorph::shape_type{3, 4, 4});
  {
    const tensor<double> y = outer.forward(x, false);
    const tensor<double> p = outer.paths()[0][0]->forward(x, false);
    const tensor<double> q = outer.paths()[1][0]->forward(x, false);
    for (idx n = 0; n < 2; ++n)
      for (idx c = 0; c < 3; ++c)
        for (idx i = 0; i < 4; ++i)
          for (idx j = 0; j < 4; ++j)
            REQUIRE(y(n, c, i, j) == p(n, c, 0, 0) * q(n, 0, i, j));
  }
  check_gradients(outer, x, rng);
  // Shapes that do not merge are refused with both shapes.
  std::vector<nn::layer_list<double>> bad(2);
  bad[0].push_back(conv(3, 2, 1));
  nn::parallel<double> bad_mul(std::move(bad), nn::merge_kind::mul);
  NM_REQUIRE_THROWS_WITH(bad_mul.output_shape({3, 4, 4}), netmorph::shape_error,
                         "nn::parallel (mul): path 1 gives shape (3, 4, 4), which does not "
                         "broadcast with (2, 4, 4) of the paths before it");
  std::vector<nn::layer_list<double>> flat(2);
  flat[0].push_back(std::make_unique<nn::flatten<double>>());
  nn::parallel<double> bad_cat(std::move(flat), nn::merge_kind::concat);
  NM_REQUIRE_THROWS_WITH(bad_cat.output_shape({3, 4, 4}), netmorph::shape_error,
                         "nn::parallel (concat): path 1 gives shape (3, 4, 4), path 0 gives (48); "
                         "all but the channel axis must agree");
  NM_REQUIRE_THROWS_WITH(nn::merge_kind_from_string("sum", "test"), netmorph::value_error,
                         "test: unknown merge 'sum' (add, concat, mul)");
  // A wrong gradient shape after a forward pass names both shapes.
  mul.forward(x, true);
  NM_REQUIRE_THROWS_WITH(mul.backward(tensor<double>({2, 3, 4, 3})), netmorph::shape_error,
                         "nn::parallel::backward: gradient has shape (2, 3, 4, 3), the output "
                         "has (2, 3, 4, 4)");
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

namespace {

/// Max or average pooling by definition: every window cell of the zero-padded input, padding
/// never winning a max, an average over `k * k`.
tensor<double> reference_pool(const tensor<double>& x, bool max, idx k, idx s, idx p) {
  const idx n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  const idx ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
  tensor<double> y({n, c, ho, wo});
  for (idx a = 0; a < n; ++a)
    for (idx b = 0; b < c; ++b)
      for (idx i = 0; i < ho; ++i)
        for (idx j = 0; j < wo; ++j) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0;
          for (idx u = 0; u < k; ++u)
            for (idx v = 0; v < k; ++v) {
              const idx r = i * s - p + u, q = j * s - p + v;
              if (r < 0 || r >= h || q < 0 || q >= w) continue;
              best = std::max(best, x(a, b, r, q));
              sum += x(a, b, r, q);
            }
          y(a, b, i, j) = max ? best : sum / double(k * k);
        }
  return y;
}

/// PyTorch's adaptive average pooling bins, written out: rows floor(i*H/oh) .. ceil((i+1)*H/oh).
tensor<double> reference_adaptive(const tensor<double>& x, idx oh, idx ow) {
  const idx n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  tensor<double> y({n, c, oh, ow});
  for (idx a = 0; a < n; ++a)
    for (idx b = 0; b < c; ++b)
      for (idx i = 0; i < oh; ++i)
        for (idx j = 0; j < ow; ++j) {
          const idx r0 = idx(std::floor(double(i * h) / double(oh))),
                    r1 = idx(std::ceil(double((i + 1) * h) / double(oh))),
                    c0 = idx(std::floor(double(j * w) / double(ow))),
                    c1 = idx(std::ceil(double((j + 1) * w) / double(ow)));
          double sum = 0;
          for (idx r = r0; r < r1; ++r)
            for (idx q = c0; q < c1; ++q)
              sum += x(a, b, r, q);
          y(a, b, i, j) = sum / double((r1 - r0) * (c1 - c0));
        }
  return y;
}

}  // namespace

TEST_CASE("padded and adaptive pooling match their definitions on random shapes", "[nn][pool]") {
  auto rng = nmtest::make_rng(112);
  for (int trial = 0; trial < 40; ++trial) {
    const idx k = draw(rng, 1, 4), s = draw(rng, 1, 3), p = draw(rng, 0, k / 2),
              h = draw(rng, std::max<idx>(1, k - 2 * p), 9),
              w = draw(rng, std::max<idx>(1, k - 2 * p), 9), oh = draw(rng, 1, 8),
              ow = draw(rng, 1, 8);
    const bool max = trial % 2 == 0;
    CAPTURE(trial, k, s, p, h, w, oh, ow, max);
    const tensor<double> x = nmtest::randn<double>({2, 3, h, w}, rng);
    nn::pool2d<double> pool(max ? nn::pool_mode::max : nn::pool_mode::average, k, s, p);
    REQUIRE(pool.padding() == p);
    REQUIRE(netmorph::relative_error(pool.forward(x, trial % 3 == 0),
                                     reference_pool(x, max, k, s, p)) <=
            nmtest::reorder_tolerance());
    nn::adaptive_pool2d<double> ap(oh, ow);
    REQUIRE(ap.output_shape({3, h, w}) == netmorph::shape_type{3, oh, ow});
    REQUIRE(netmorph::relative_error(ap.forward(x, trial % 3 == 1),
                                     reference_adaptive(x, oh, ow)) <= nmtest::reorder_tolerance());
  }
  // Adaptive pooling to the input's own size is the identity.
  const tensor<double> x = nmtest::randn<double>({1, 2, 4, 5}, rng);
  nn::adaptive_pool2d<double> same(4, 5);
  REQUIRE(same.forward(x, false) == x);
}

TEST_CASE("layers reject bad configurations with named messages", "[nn][error]") {
  NM_REQUIRE_THROWS_WITH(nn::dropout<double>(1.0), netmorph::value_error,
                         "nn::dropout: p must be in [0, 1), got 1");
  NM_REQUIRE_THROWS_WITH(nn::pool2d<double>(nn::pool_mode::max, 0, 1), netmorph::value_error,
                         "nn::pool2d: window and stride must be >= 1, got 0 and 1");
  NM_REQUIRE_THROWS_WITH(nn::pool2d<double>(nn::pool_mode::max, 3, 2, 2), netmorph::value_error,
                         "nn::pool2d: padding must be in [0, window / 2 = 1], got 2");
  NM_REQUIRE_THROWS_WITH(nn::adaptive_pool2d<double>(0, 3), netmorph::value_error,
                         "nn::adaptive_pool2d: output size must be >= 1, got 0 x 3");
  {
    nn::adaptive_pool2d<double> a(2, 2);
    NM_REQUIRE_THROWS_WITH(a.backward(tensor<double>({1, 1, 2, 2})), netmorph::error,
                           "nn::adaptive_pool2d::backward: no cached input");
    a.forward(tensor<double>({1, 1, 5, 5}), true);
    NM_REQUIRE_THROWS_WITH(a.backward(tensor<double>({1, 1, 3, 2})), netmorph::shape_error,
                           "nn::adaptive_pool2d::backward: gradient has shape (1, 1, 3, 2), the "
                           "output has (1, 1, 2, 2)");
  }
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
  nn::pool2d<double> mp(nn::pool_mode::max, 2, 2);
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

TEST_CASE("every layer reports its kind, a description, and is found by layer_cast and visit",
          "[nn][layers]") {
  std::mt19937_64 rng(7);
  nn::layer_list<double> all;
  all.push_back(std::make_unique<nn::conv2d<double>>(
      nmtest::randn<double>({4, 2, 3, 3}, rng), tensor<double>(), netmorph::conv2d_options{2, 1}));
  all.push_back(std::make_unique<nn::dense<double>>(nmtest::randn<double>({3, 5}, rng),
                                                    nmtest::randn<double>({3}, rng)));
  all.push_back(std::make_unique<nn::pool2d<double>>(nn::pool_mode::average, 3, 2));
  all.push_back(std::make_unique<nn::flatten<double>>());
  all.push_back(std::make_unique<nn::pool2d<double>>(nn::pool_mode::max, 3, 2, 1));
  all.push_back(std::make_unique<nn::adaptive_pool2d<double>>(7, 6));
  all.push_back(
      std::make_unique<nn::batch_norm<double>>(netmorph::batch_norm_weights<double>::identity(4)));
  all.push_back(std::make_unique<nn::dropout<double>>(0.25));
  all.push_back(
      std::make_unique<nn::activation<double>>(activation_fn{activation_kind::leaky_relu, 0.2}));
  all.push_back(std::make_unique<nn::p_activation<double>>(
      netmorph::make_p_activation(activation_fn{activation_kind::tanh}, 0.5)));
  all.push_back(std::make_unique<nn::parallel<double>>());
  const std::vector<std::string> kinds{"conv2d",     "dense",           "pool2d",     "flatten",
                                       "pool2d",     "adaptive_pool2d", "batch_norm", "dropout",
                                       "activation", "p_activation",    "parallel"};
  const std::vector<std::string> described{"conv2d 2->4 3x3 stride 2 padding 1 no bias",
                                           "dense 5->3",
                                           "pool2d average 3x3 stride 2",
                                           "flatten",
                                           "pool2d max 3x3 stride 2 padding 1",
                                           "adaptive_pool2d average to 7x6",
                                           "batch_norm 4 eps 1e-05 momentum 0.1",
                                           "dropout 0.25",
                                           "activation leaky_relu 0.2",
                                           "p_activation tanh a 0.5",
                                           "parallel 0 paths ()"};
  for (std::size_t i = 0; i < all.size(); ++i) {
    nn::layer<double>* l = all[i].get();
    CAPTURE(i);
    REQUIRE(nn::to_string(l->kind()) == kinds[i]);
    REQUIRE(l->describe() == described[i]);
    REQUIRE((nn::layer_cast<nn::conv2d>(l) != nullptr) == (i == 0));
    REQUIRE((nn::layer_cast<nn::parallel>(l) != nullptr) == (i == all.size() - 1));
    // visit hands over the concrete class, const or not.
    const std::string via = nn::visit(*l, [](auto& concrete) {
      return std::string(nn::to_string(std::decay_t<decltype(concrete)>::static_kind));
    });
    const nn::layer<double>& cl = *l;
    const bool is_const = nn::visit(cl, [](auto& concrete) {
      return std::is_const<std::remove_reference_t<decltype(concrete)>>::value;
    });
    REQUIRE(via == kinds[i]);
    REQUIRE(is_const);
    REQUIRE(l->clone()->describe() == described[i]);
  }
}

TEST_CASE("backward before a training-mode forward pass is refused by every layer",
          "[nn][layers][error]") {
  const std::string msg = "::backward: no cached input (call forward with training = true)";
  nn::batch_norm<double> bn(netmorph::batch_norm_weights<double>::identity(2));
  NM_REQUIRE_THROWS_WITH(bn.backward(tensor<double>({1, 2})), netmorph::error,
                         "nn::batch_norm" + msg);
  nn::dropout<double> d(0.5);
  NM_REQUIRE_THROWS_WITH(d.backward(tensor<double>({1, 2})), netmorph::error, "nn::dropout" + msg);
  nn::p_activation<double> p(netmorph::make_p_activation(activation_fn{}, 1.0));
  NM_REQUIRE_THROWS_WITH(p.backward(tensor<double>({1, 2})), netmorph::error,
                         "nn::p_activation" + msg);
  nn::activation<double> a(activation_fn{});
  NM_REQUIRE_THROWS_WITH(a.backward(tensor<double>({1, 2})), netmorph::error,
                         "nn::activation" + msg);
  nn::parallel<double> par;
  NM_REQUIRE_THROWS_WITH(par.backward(tensor<double>({1, 2})), netmorph::error,
                         "nn::parallel" + msg);
  NM_REQUIRE_THROWS_WITH(par.forward(tensor<double>({1, 2}), false), netmorph::shape_error,
                         "nn::parallel: no paths");
  // A gradient of the wrong shape after a forward pass names both shapes.
  a.forward(tensor<double>({2, 3}), true);
  NM_REQUIRE_THROWS_WITH(a.backward(tensor<double>({3, 2})), netmorph::shape_error,
                         "nn::activation::backward: gradient has shape (3, 2), the output has "
                         "(2, 3)");
  bn.forward(tensor<double>({3, 2}), true);
  NM_REQUIRE_THROWS_WITH(bn.backward(tensor<double>({2, 2})), netmorph::shape_error,
                         "nn::batch_norm::backward: gradient has shape (2, 2)");
  auto negative = netmorph::batch_norm_weights<double>::identity(2);
  negative.running_var(1) = -0.5;
  NM_REQUIRE_THROWS_WITH(nn::batch_norm<double>(negative), netmorph::value_error,
                         "nn::batch_norm: batch-norm running variance must be >= 0, got -0.5 for "
                         "channel 1");
  NM_REQUIRE_THROWS_WITH(bn.forward(tensor<double>({4}), true), netmorph::shape_error,
                         "nn::batch_norm: input must be (N, C, ...), got shape (4)");
}

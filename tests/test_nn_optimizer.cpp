// Adam and AdamW against their formulas, and the optimizer state through every model morph
// (docs/DESIGN.md §8.4): untouched parameters keep theirs bit for bit, grown ones carry it to the
// places their channels and taps went, new ones start from zero; a Net2Net child's first Adam
// step moves its replicas together and like the parent.

#include "support/nn_support.hpp"

#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace nn = netmorph::nn;
using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::tensor;
using nmtest::draw;
using nmtest::idx;

namespace {

/// PyTorch's Adam/AdamW update of one scalar (torch.optim.Adam with its defaults: no amsgrad,
/// no maximize), written out independently of the library.
struct scalar_adam {
  double w, m = 0, v = 0;
  long long t = 0;
  void step(double g, const nn::adam& o) {
    ++t;
    if (o.decoupled_weight_decay)
      w *= 1 - o.lr * o.weight_decay;
    else
      g += o.weight_decay * w;
    m = o.beta1 * m + (1 - o.beta1) * g;
    v = o.beta2 * v + (1 - o.beta2) * g * g;
    const double mhat = m / (1 - std::pow(o.beta1, double(t)));
    const double vhat = v / (1 - std::pow(o.beta2, double(t)));
    w -= o.lr * mhat / (std::sqrt(vhat) + o.eps);
  }
};

/// conv -> batch norm -> act -> conv -> act -> flatten -> dense on random shapes, with biases.
template <typename Scalar>
nn::model<Scalar> small_cnn(std::mt19937_64& rng, idx& c_in, idx& h) {
  c_in = draw(rng, 1, 3);
  h = draw(rng, 5, 7);
  const idx c1 = draw(rng, 2, 4), c2 = draw(rng, 2, 4), k = 1 + 2 * draw(rng, 0, 1);
  nn::model<Scalar> m({c_in, h, h}, rng());
  m.add(nn::conv2d<Scalar>(nmtest::randn<Scalar>({c1, c_in, k, k}, rng, 0.4),
                           nmtest::randn<Scalar>({c1}, rng, 0.1),
                           netmorph::conv2d_options{1, (k - 1) / 2}),
        "conv1");
  m.add(nn::batch_norm<Scalar>(netmorph::batch_norm_weights<Scalar>::identity(c1)), "bn1");
  m.add(nn::activation<Scalar>(activation_fn{activation_kind::tanh}), "act1");
  m.add(nn::conv2d<Scalar>(nmtest::randn<Scalar>({c2, c1, 3, 3}, rng, 0.3),
                           nmtest::randn<Scalar>({c2}, rng, 0.1), netmorph::conv2d_options{1, 1}),
        "conv2");
  m.add(nn::activation<Scalar>(activation_fn{activation_kind::tanh}), "act2");
  m.add(nn::flatten<Scalar>(), "flat");
  m.add(nn::dense<Scalar>(nmtest::randn<Scalar>({3, c2 * h * h}, rng, 0.1),
                          nmtest::randn<Scalar>({3}, rng, 0.1)),
        "fc");
  return m;
}

template <typename Scalar>
nn::dataset<Scalar> batch_of(idx n, idx c, idx h, std::mt19937_64& rng) {
  nn::dataset<Scalar> d{nmtest::randn<Scalar>({n, c, h, h}, rng), {}};
  for (idx s = 0; s < n; ++s)
    d.labels.push_back(static_cast<int>(s % 3));
  return d;
}

/// One training step on the whole of `d` (no shuffling): forward, backward, `opt.step`.
template <typename Scalar>
void one_step(nn::model<Scalar>& m, const nn::dataset<Scalar>& d, const nn::optimizer& opt) {
  m.zero_grad();
  m.backward(nn::softmax_cross_entropy(m.forward(d.x, true), d.labels).grad);
  opt.step(m);
}

/// A `small_cnn` with a batch of `n` of its inputs, trained `steps` steps on it by `o`.
template <typename Scalar>
struct trained_cnn {
  idx c = 0, h = 0;  // the input's channels and size, drawn by small_cnn (declared first)
  nn::model<Scalar> m;
  nn::dataset<Scalar> d;
  trained_cnn(std::mt19937_64& rng, const nn::optimizer& o, int steps, idx n)
      : m(small_cnn<Scalar>(rng, c, h)), d(batch_of<Scalar>(n, c, h, rng)) {
    for (int s = 0; s < steps; ++s)
      one_step(m, d, o);
  }
};

/// Every parameter of `m` by its state_dict name ("conv1.weight").
template <typename Scalar>
std::map<std::string, nn::parameter<Scalar>> parameters_by_name(nn::model<Scalar>& m) {
  std::map<std::string, nn::parameter<Scalar>> out;
  for (const std::string& name : m.names())
    for (auto* p : m.find(name).parameters())
      out[name + "." + p->name] = *p;
  return out;
}

/// Whether the layer called `layer` is one of `changed` or inside one of them.
bool within(const std::string& layer, const std::vector<std::string>& changed) {
  for (const std::string& c : changed)
    if (layer == c || layer.compare(0, c.size() + 1, c + ".") == 0) return true;
  return false;
}

/// The three optimizers, each with its state moved by a few steps.
std::vector<nn::optimizer> optimizers() {
  return {nn::sgd{0.05, 0.9, 1e-3}, nn::adam{1e-2, 0.9, 0.999, 1e-8, 1e-3}, nn::adamw(1e-2, 1e-2)};
}

/// Every parameter not made or changed by the morph (its layer is not among `new_layers`)
/// has the value and state it had, bit for bit.
template <typename Scalar>
void require_untouched(nn::model<Scalar>& m,
                       const std::map<std::string, nn::parameter<Scalar>>& before,
                       const netmorph::morph_report& r) {
  for (const std::string& layer : m.names()) {
    if (within(layer, r.new_layers)) continue;
    for (auto* p : m.find(layer).parameters()) {
      const auto& old = before.at(layer + "." + p->name);
      CAPTURE(layer, p->name);
      REQUIRE(p->value == old.value);
      REQUIRE(p->velocity == old.velocity);
      REQUIRE(p->exp_avg == old.exp_avg);
      REQUIRE(p->exp_avg_sq == old.exp_avg_sq);
      REQUIRE(p->step == old.step);
    }
  }
}

/// A parameter a morph created: zero velocity, no Adam state.
template <typename Scalar>
void require_fresh(const nn::parameter<Scalar>& p) {
  for (Scalar v : p.velocity)
    REQUIRE(v == Scalar(0));
  REQUIRE(p.exp_avg.empty());
  REQUIRE(p.exp_avg_sq.empty());
  REQUIRE(p.step == 0);
}

}  // namespace

TEMPLATE_TEST_CASE("nn::adam and nn::adamw follow PyTorch's update on every parameter",
                   "[nn][optimizer]", float, double) {
  auto rng = nmtest::make_rng(900);
  for (const nn::adam& o : {nn::adam{3e-2, 0.8, 0.99, 1e-6, 0.0},
                            nn::adam{1e-2, 0.9, 0.999, 1e-8, 0.05}, nn::adamw(2e-2, 0.1)}) {
    idx c = 0, h = 0;
    auto m = small_cnn<TestType>(rng, c, h);
    const auto d = batch_of<TestType>(4, c, h, rng);
    std::vector<std::vector<scalar_adam>> ref;
    for (auto* p : m.parameters()) {
      ref.emplace_back();
      for (TestType w : p->value)
        ref.back().push_back(scalar_adam{double(w)});
    }
    for (int s = 0; s < 4; ++s) {
      m.zero_grad();
      m.backward(nn::softmax_cross_entropy(m.forward(d.x, true), d.labels).grad);
      const auto ps = m.parameters();
      for (std::size_t i = 0; i < ps.size(); ++i)
        for (idx k = 0; k < ps[i]->value.size(); ++k) {
          // the reference steps from the library's current weight, with the same gradient
          ref[i][static_cast<std::size_t>(k)].w = double(ps[i]->value.data()[k]);
          ref[i][static_cast<std::size_t>(k)].step(double(ps[i]->grad.data()[k]), o);
        }
      nn::optimizer(o).step(m);
      for (std::size_t i = 0; i < ps.size(); ++i) {
        REQUIRE(ps[i]->step == s + 1);
        for (idx k = 0; k < ps[i]->value.size(); ++k) {
          const scalar_adam& r = ref[i][static_cast<std::size_t>(k)];
          const double tol = std::is_same<TestType, float>::value ? 1e-4 : 1e-12;
          CAPTURE(s, i, k, o.decoupled_weight_decay);
          REQUIRE(std::abs(double(ps[i]->value.data()[k]) - r.w) <= tol * (1 + std::abs(r.w)));
          REQUIRE(std::abs(double(ps[i]->exp_avg.data()[k]) - r.m) <= tol * (1 + std::abs(r.m)));
          REQUIRE(std::abs(double(ps[i]->exp_avg_sq.data()[k]) - r.v) <=
                  tol * (1e-6 + std::abs(r.v)));
        }
      }
    }
  }
}

TEST_CASE("nn::optimizer names its kind, sets the learning rate and refuses bad settings",
          "[nn][optimizer]") {
  nn::optimizer s = nn::sgd{0.1, 0.9, 0};
  REQUIRE(s.kind() == "sgd");
  REQUIRE(s.as_sgd() != nullptr);
  REQUIRE(s.as_adam() == nullptr);
  nn::optimizer a = nn::adam{};
  REQUIRE(a.kind() == "adam");
  nn::optimizer w = nn::adamw();
  REQUIRE(w.kind() == "adamw");
  REQUIRE(w.as_adam()->weight_decay == 1e-2);
  w.set_lr(0.5);
  REQUIRE(w.lr() == 0.5);
  REQUIRE(w.as_adam()->lr == 0.5);
  REQUIRE_THROWS_WITH(w.set_lr(-1.0), Catch::Contains("nn::optimizer: the learning rate -1"));
  REQUIRE(w.lr() == 0.5);  // refused: unchanged
  REQUIRE_THROWS_AS(nn::optimizer(nn::adam{1e-3, 1.0}), netmorph::value_error);
  REQUIRE_THROWS_WITH(nn::optimizer(nn::adam{1e-3, 0.9, 0.999, 0.0}),
                      Catch::Contains("eps (> 0) 0"));
  REQUIRE_THROWS_WITH(nn::optimizer(nn::sgd{0.1, std::nan(""), 0}),
                      Catch::Contains("the momentum nan"));
}

TEST_CASE("a model trained with Adam or AdamW learns", "[nn][optimizer]") {
  for (const nn::optimizer& o : {nn::optimizer(nn::adam{2e-3}), nn::optimizer(nn::adamw(2e-3))}) {
    std::mt19937_64 rng(901);
    const auto data = nmtest::synthetic<double>(60, rng);
    nn::architecture_options t;
    t.classes = 3;
    t.seed = 5;
    auto m = nn::parse_architecture<double>("(3:4)(3:6)", {1, 8, 8}, t);
    const double before = nn::evaluate(m, data).loss;
    for (int e = 0; e < 6; ++e)
      nn::train_epoch(m, data, o, 10, e);
    CAPTURE(o.kind());
    REQUIRE(nn::evaluate(m, data).loss < 0.6 * before);
  }
}

TEMPLATE_TEST_CASE("nn::widen carries every optimizer's state to where the channels went",
                   "[nn][optimizer][width]", float, double) {
  auto rng = nmtest::make_rng(902);
  for (int trial = 0; trial < 6; ++trial)
    for (const nn::optimizer& o : optimizers()) {
      trained_cnn<TestType> cnn(rng, o, 3, 4);
      auto& m = cnn.m;
      const auto before = parameters_by_name(m);
      const idx c1 = before.at("conv1.bias").value.size(), cn = c1 + draw(rng, 1, 3);
      netmorph::widen_options w;
      w.new_channels = cn;
      w.rule = trial % 2 ? netmorph::width_rule::net2net : netmorph::width_rule::netmorph;
      w.seed = rng();
      const auto r = nn::widen(m, "conv1", w);
      CAPTURE(trial, o.kind(), netmorph::to_string(w.rule));
      REQUIRE(r.new_layers == std::vector<std::string>{"conv1", "bn1", "conv2"});
      require_untouched(m, before, r);
      const auto after = parameters_by_name(m);
      // Where each new channel came from, found independently from the weights: an old channel
      // whose filter row it holds (NetMorph: old channels are kept, new ones are random).
      const auto& w_old = before.at("conv1.weight").value;
      const auto& w_new = after.at("conv1.weight").value;
      const idx row = w_old.size() / c1;
      std::vector<idx> src(static_cast<std::size_t>(cn), -1),
          copies(static_cast<std::size_t>(c1), 0);
      for (idx q = 0; q < cn; ++q)
        for (idx s = 0; s < c1 && src[q] < 0; ++s)
          if (std::equal(w_new.data() + q * row, w_new.data() + (q + 1) * row,
                         w_old.data() + s * row))
            src[q] = s;
      for (idx q = 0; q < cn; ++q)
        if (src[q] >= 0) ++copies[src[q]];
      for (idx s = 0; s < c1; ++s)
        REQUIRE(copies[s] >= 1);  // every old channel is somewhere
      const bool adam = o.as_adam() != nullptr;
      // The state of one entry of a grown tensor: the gradient rule of §8.4.
      const auto expect = [&](const nn::parameter<TestType>& old,
                              const nn::parameter<TestType>& now, idx old_at, idx new_at,
                              double div) {
        const auto check = [&](const tensor<TestType>& a, const tensor<TestType>& b, double dv) {
          if (dv == 1.0)
            REQUIRE(b.data()[new_at] == a.data()[old_at]);
          else
            REQUIRE(double(b.data()[new_at]) ==
                    Approx(double(a.data()[old_at]) / dv).epsilon(1e-6).margin(1e-30));
        };
        check(old.velocity, now.velocity, div);
        if (adam) {
          check(old.exp_avg, now.exp_avg, div);
          check(old.exp_avg_sq, now.exp_avg_sq, div * div);
        }
      };
      const auto zero = [&](const nn::parameter<TestType>& now, idx at) {
        REQUIRE(now.velocity.data()[at] == TestType(0));
        if (adam) REQUIRE(now.exp_avg.data()[at] == TestType(0));
        if (adam) REQUIRE(now.exp_avg_sq.data()[at] == TestType(0));
      };
      for (const char* name : {"conv1.weight", "conv1.bias", "bn1.gamma", "bn1.beta"}) {
        const auto& old = before.at(name);
        const auto& now = after.at(name);
        REQUIRE(now.step == old.step);
        REQUIRE(now.exp_avg.empty() == !adam);
        const idx per = old.value.size() / c1;
        for (idx q = 0; q < cn; ++q)
          for (idx k = 0; k < per; ++k) {
            if (src[q] < 0)
              zero(now, q * per + k);
            else  // rows: the gradient of each copy is its source's divided by the copies
              expect(old, now, src[q] * per + k, q * per + k, double(copies[src[q]]));
          }
      }
      // conv2 reads the group: columns copied (the gradient of a copy's column is its source's).
      const auto& old2 = before.at("conv2.weight");
      const auto& now2 = after.at("conv2.weight");
      REQUIRE(now2.step == old2.step);
      const idx c2 = old2.value.dim(0), kk = 9;
      for (idx o2 = 0; o2 < c2; ++o2)
        for (idx q = 0; q < cn; ++q)
          for (idx k = 0; k < kk; ++k) {
            if (src[q] < 0)
              zero(now2, (o2 * cn + q) * kk + k);
            else
              expect(old2, now2, (o2 * c1 + src[q]) * kk + k, (o2 * cn + q) * kk + k, 1.0);
          }
      REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
    }
}

TEMPLATE_TEST_CASE(
    "the first Adam step after a Net2Net widen moves replicas together and like "
    "the parent",
    "[nn][optimizer][width]", float, double) {
  // Adam's step is invariant to the scale of the gradient, and a replica row's gradient is its
  // source's divided by its copies: with its moments divided likewise (first moment by n, second
  // by n^2), each replica row moves exactly as the parent's row does (up to eps). Replicated
  // columns and rows receive equal updates under every optimizer.
  auto rng = nmtest::make_rng(903);
  for (int trial = 0; trial < 4; ++trial)
    for (nn::optimizer o : optimizers()) {
      if (o.as_adam()) {
        nn::adam a = *o.as_adam();
        a.eps = 1e-30;                                      // the invariance is exact without eps
        if (!a.decoupled_weight_decay) a.weight_decay = 0;  // coupled decay is not scale-free
        o = a;
      }
      trained_cnn<TestType> cnn(rng, o, 3, 5);
      auto& m = cnn.m;
      const auto& d = cnn.d;
      auto parent = m;
      const idx c1 = m.find("conv1").parameters()[1]->value.size();
      netmorph::widen_options w;
      w.new_channels = c1 + draw(rng, 1, 3);
      w.rule = netmorph::width_rule::net2net;
      w.permute = false;  // old channels first, then the replicas
      w.seed = rng();
      nn::widen(m, "conv1", w);
      one_step(parent, d, o);
      one_step(m, d, o);
      const auto pp = parameters_by_name(parent);
      const auto cp = parameters_by_name(m);
      const auto& pw = pp.at("conv1.weight").value;
      const auto& cw = cp.at("conv1.weight").value;
      const auto& c2w = cp.at("conv2.weight").value;
      const idx row = pw.size() / c1;
      const double tol = std::is_same<TestType, float>::value ? 1e-4 : 1e-9;
      CAPTURE(trial, o.kind());
      for (idx q = 0; q < w.new_channels; ++q) {
        // Find the parent row this child row moved with: rows q < c1 are the originals.
        idx s = q;
        if (q >= c1) {
          double best = 1e300;
          for (idx t = 0; t < c1; ++t) {
            double dist = 0;
            for (idx k = 0; k < row; ++k)
              dist += std::abs(double(cw.data()[q * row + k]) - double(cw.data()[t * row + k]));
            if (dist < best) best = dist, s = t;
          }
          // A replica and its source received equal updates (up to the round-off of the
          // products that computed their gradients): still equal.
          const auto close = [&](TestType a, TestType b) {
            return std::abs(double(a) - double(b)) <= tol * (1 + std::abs(double(b)));
          };
          for (idx k = 0; k < row; ++k)
            REQUIRE(close(cw.data()[q * row + k], cw.data()[s * row + k]));
          for (idx o2 = 0; o2 < c2w.dim(0); ++o2)
            for (idx k = 0; k < 9; ++k)
              REQUIRE(close(c2w.data()[(o2 * w.new_channels + q) * 9 + k],
                            c2w.data()[(o2 * w.new_channels + s) * 9 + k]));
        }
        if (o.as_adam())
          for (idx k = 0; k < row; ++k)
            REQUIRE(std::abs(double(cw.data()[q * row + k]) - double(pw.data()[s * row + k])) <=
                    tol * (1 + std::abs(double(pw.data()[s * row + k]))));
      }
    }
}

TEMPLATE_TEST_CASE("depth, kernel and subnet morphs keep, pad or start the optimizer state",
                   "[nn][optimizer]", float, double) {
  auto rng = nmtest::make_rng(904);
  for (int op = 0; op < 4; ++op)
    for (const nn::optimizer& o : optimizers()) {
      trained_cnn<TestType> cnn(rng, o, 2, 4);
      auto& m = cnn.m;
      const auto& d = cnn.d;
      const auto before = parameters_by_name(m);
      netmorph::morph_report r;
      CAPTURE(op, o.kind());
      if (op == 0) {
        netmorph::deepen_options dp;
        dp.seed = rng();
        r = nn::deepen(m, "conv2", dp);
      } else if (op == 1) {
        netmorph::grow_kernel_options g;
        g.new_kernel = 5;
        g.seed = rng();
        r = nn::grow_kernel(m, "conv2", g);
        // The weight's state is padded with zeros around the old taps; the bias's is kept.
        const auto& old = before.at("conv2.weight");
        const auto& now = *m.find("conv2").parameters()[0];
        REQUIRE(now.step == old.step);
        const auto pad = [](const tensor<TestType>& t) { return netmorph::pad_kernel(t, 5, 5); };
        REQUIRE(now.velocity == pad(old.velocity));
        if (o.as_adam()) {
          REQUIRE(now.exp_avg == pad(old.exp_avg));
          REQUIRE(now.exp_avg_sq == pad(old.exp_avg_sq));
        }
        const auto& bias = *m.find("conv2").parameters()[1];
        const auto& old_bias = before.at("conv2.bias");
        REQUIRE(bias.velocity == old_bias.velocity);
        REQUIRE(bias.exp_avg == old_bias.exp_avg);
        REQUIRE(bias.exp_avg_sq == old_bias.exp_avg_sq);
        REQUIRE(bias.step == old_bias.step);
      } else if (op == 2) {
        netmorph::subnet_options so;
        so.kernels = {3, 1};
        so.widths = {6};
        so.step.seed = rng();
        r = nn::to_subnet(m, "conv2", so);
      } else {
        netmorph::stacked_subnet_options st;
        netmorph::subnet_options path;
        path.kernels = {3, 1};
        path.widths = {6};
        st.paths = {path, path};
        st.seed = rng();
        r = nn::to_stacked_subnet(m, "conv2", st);
      }
      require_untouched(m, before, r);
      REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<TestType>());
      if (op != 1)  // every parameter of the new layers is new
        for (const std::string& layer : m.names())
          if (within(layer, r.new_layers))
            for (auto* p : m.find(layer).parameters())
              require_fresh(*p);
      // And the child trains on with the carried state.
      one_step(m, d, o);
    }
}

// Keep training where you stopped (docs/RESULTS.md §5): a CNN trained with Adam on Fashion-MNIST
// is deepened (a conv becomes two, NetMorph's P-activation between) and widened (its first
// convolution 1.5x, NetMorph's rule), then trained on in three ways from the same child, the same
// batches and the same learning rate:
//
//   carried  the optimizer state the morphs carried (docs/DESIGN.md §8.4; what the library does)
//   reset    a fresh optimizer: zero moments, step counts from 0 (what users do today)
//   warmup   a fresh optimizer and the learning rate rising linearly over the first `warmup`
//            steps (the usual cure for a reset's spike)
//   unmorphed  the parent itself, trained on with its state (the reference: no morph at all)
//
//   build/examples/adam_fashion [--quick] [--seeds N] [--out DIR] [--key=value ...]
//
// Keys: optimizer (adam | adamw), epochs (of the parent), after (epochs after the morph), train,
// validation, test (image counts), lr, warmup (steps), window (steps per loss point). Writes
// OUT/adam_fashion.csv and _mean.csv (accuracy per epoch, as the other experiments) and
// OUT/adam_fashion_loss.csv (the training loss right after the morph: mean, min and max over the
// seeds of each window of steps); exits 1 if the child changed a test prediction at the morph.
#include "experiment.hpp"

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace experiment;
using netmorph::activation_fn;
using netmorph::activation_kind;

const char* const usage =
    "usage: adam_fashion [--quick] [--seeds N] [--out DIR] [--key=value ...]\n"
    "  keys: optimizer=adam|adamw epochs after train validation test lr warmup window\n";

/// Starts every parameter's optimizer state afresh, as a new optimizer would.
void reset_state(model& m) {
  for (auto* p : m.parameters()) {
    p->velocity = netmorph::tensor<Scalar>(p->value.shape());
    p->exp_avg = netmorph::tensor<Scalar>();
    p->exp_avg_sq = netmorph::tensor<Scalar>();
    p->step = 0;
  }
}

/// One epoch of minibatch steps (shuffled by the model's generator), the learning rate of step
/// `s` (counted from the morph) given by `lr_at`; appends every step's loss to `losses`.
template <typename LrAt>
void epoch(model& m, const dataset& d, nn::optimizer opt, index_type batch, LrAt&& lr_at,
           std::vector<double>& losses) {
  std::vector<index_type> order(static_cast<std::size_t>(d.size()));
  std::iota(order.begin(), order.end(), index_type(0));
  std::shuffle(order.begin(), order.end(), m.rng());
  for (index_type s = 0; s < d.size(); s += batch) {
    const std::vector<index_type> idx(order.begin() + s,
                                      order.begin() + std::min(d.size(), s + batch));
    const dataset b = nn::gather(d, idx);
    m.zero_grad();
    const auto l = nn::softmax_cross_entropy(m.forward(b.x, true), b.labels);
    m.backward(l.grad);
    opt.set_lr(lr_at(static_cast<long long>(losses.size())));
    opt.step(m);
    losses.push_back(l.loss);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse_options(
      argc, argv, usage,
      {"optimizer", "epochs", "after", "train", "validation", "test", "lr", "warmup", "window"});
  const std::string kind = o.text("optimizer", "adam");
  if (kind != "adam" && kind != "adamw")
    throw std::runtime_error("--optimizer=" + kind + ": adam or adamw");
  const int epochs = int(o.number("epochs", o.quick ? 1 : 4));
  const int after = int(o.number("after", o.quick ? 1 : 4));
  const double lr = o.number("lr", 1e-3);
  const long long warmup = static_cast<long long>(o.number("warmup", o.quick ? 5 : 100));
  const std::size_t window = static_cast<std::size_t>(o.number("window", o.quick ? 2 : 10));
  const index_type batch = 64;
  const data_sets d = fashion_mnist(index_type(o.number("train", o.quick ? 400 : 10000)),
                                    index_type(o.number("validation", o.quick ? 200 : 1000)),
                                    index_type(o.number("test", o.quick ? 300 : 5000)));
  make_dir(o.out);
  const nn::optimizer opt =
      kind == "adamw" ? nn::optimizer(nn::adamw(lr, 1e-2)) : nn::optimizer(nn::adam{lr});
  std::printf(
      "%s: %lld train, %lld test images; %s lr %g; parent %d epoch(s), %d after the "
      "morph; warm-up %lld steps\n",
      d.name.c_str(), (long long)d.train.size(), (long long)d.test.size(), kind.c_str(), lr, epochs,
      after, warmup);
  const std::string tag = "adam_fashion";
  recorder rec(o.out + "/" + tag + ".csv");
  const std::vector<std::string> methods = {"carried", "reset", "warmup", "unmorphed"};
  std::map<std::string, std::vector<std::vector<double>>> losses;  // method -> seed -> step
  std::map<std::string, std::vector<double>> final_accuracy;
  bool preserved = true;
  for (int seed = 1; seed <= o.seeds; ++seed) {
    nn::architecture_options t;
    t.act = activation_fn{activation_kind::relu};
    t.dense_head = {64};
    t.seed = std::uint64_t(seed);
    model parent = nn::parse_architecture<Scalar>("(3:16)(3:32)", {1, 28, 28}, t);
    std::vector<std::string> convs;
    for (const std::string& n : parent.names())
      if (parent.find(n).kind() == nn::layer_kind::conv2d) convs.push_back(n);
    progress p;
    schedule ps;
    ps.epochs = epochs;
    ps.batch = batch;
    ps.opt = opt;
    train(parent, d, ps, "parent", seed, p, rec);
    model child = parent;
    netmorph::deepen_options dp;
    dp.seed = std::uint64_t(seed);
    dp.k2 = 3;
    if (!nn::deepen(child, convs[1], dp).exact) throw std::runtime_error("deepen is not exact");
    netmorph::widen_options w;
    w.new_channels = 24;
    w.seed = std::uint64_t(seed);
    nn::widen(child, convs[0], w);
    const index_type changed = prediction_changes(parent, child, d.test);
    std::printf("seed %d: the morphs changed %lld of %lld test predictions\n", seed,
                (long long)changed, (long long)d.test.size());
    preserved = preserved && changed == 0;
    for (const std::string& method : methods) {
      // The same generator state, hence the same batches, for every method.
      model m = method == "unmorphed" ? parent : child;
      if (method == "reset" || method == "warmup") reset_state(m);
      progress q = p;
      const double per_sample = 3.0 * forward_flops(m);
      std::vector<double>& l = (losses[method].emplace_back());
      for (int e = 0; e < after; ++e) {
        epoch(
            m, d.train, opt, batch,
            [&](long long s) {
              return method == "warmup" && s < warmup ? lr * double(s + 1) / double(warmup) : lr;
            },
            l);
        ++q.epoch;
        q.step += (d.train.size() + batch - 1) / batch;
        q.cost += per_sample * double(d.train.size());
        const nn::epoch_report v = nn::evaluate(m, d.validation), te = nn::evaluate(m, d.test);
        rec.add(method, seed, q.epoch, q.step, q.cost, "validation", v);
        rec.add(method, seed, q.epoch, q.step, q.cost, "test", te);
        std::printf("  %-9s seed %d  epoch %d  test accuracy %.4f  loss %.4f\n", method.c_str(),
                    seed, q.epoch, te.accuracy, te.loss);
        if (e + 1 == after) final_accuracy[method].push_back(te.accuracy);
      }
    }
  }
  write_means(rec.path(), o.out + "/" + tag + "_mean.csv");
  // The training loss after the morph, per window of steps: mean, min and max over the seeds of
  // the window's mean loss.
  std::ofstream out(o.out + "/" + tag + "_loss.csv");
  out << "method,step,mean,min,max\n";
  std::printf("\ntraining loss after the morph (mean over %d seed(s) of each %zu-step window):\n",
              o.seeds, window);
  std::printf("  %-9s %10s %10s %10s %10s %10s\n", "method", "first", "peak", "50 steps", "last",
              "accuracy");
  for (const std::string& method : methods) {
    const auto& runs = losses[method];
    const std::size_t n = runs.front().size() / window;
    double first = 0, peak = 0, last = 0, early = 0;
    int early_windows = 0;
    for (std::size_t k = 0; k < n; ++k) {
      double sum = 0, lo = 1e300, hi = -1e300;
      for (const auto& r : runs) {
        double mean = 0;
        for (std::size_t j = k * window; j < (k + 1) * window; ++j)
          mean += r[j] / double(window);
        sum += mean;
        lo = std::min(lo, mean);
        hi = std::max(hi, mean);
      }
      const double mean = sum / double(runs.size());
      out << method << ',' << (k + 1) * window << ',' << mean << ',' << lo << ',' << hi << '\n';
      if (k == 0) first = mean;
      if ((k + 1) * window <= 50) {  // the first 50 steps
        early += mean;
        ++early_windows;
      }
      peak = std::max(peak, mean);
      last = mean;
    }
    const auto acc = mean_std(final_accuracy[method]);
    std::printf("  %-9s %10.4f %10.4f %10.4f %10.4f %7.4f +- %.4f\n", method.c_str(), first, peak,
                early / std::max(1, early_windows), last, acc.first, acc.second);
  }
  std::printf("CSV: %s, %s_loss.csv\n", rec.path().c_str(), (o.out + "/" + tag).c_str());
  if (!preserved) {
    std::printf("FAILED: the child changed a test prediction at the morph\n");
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "adam_fashion: %s\n", e.what());
  return 2;
}

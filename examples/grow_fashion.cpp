// Paper §4.2-4.3 adapted to Fashion-MNIST (1 x 28 x 28; CIFAR-10 cannot be had here). Two chains
// of morphs, each step continuing from the trained previous network:
//
//   depth:  111 -> 211 -> 222 -> 2222 -> 3333. Digit g is the number of layers of group g: three
//           convolution groups (5:32), (5:32), (5:64), each followed by 2x2 max pooling, and a
//           fourth digit for the hidden dense layers (64 units) of the classifier; "111" has one
//           hidden dense layer. A step adds a (3:C) layer behind a group's last layer, or a
//           64-unit dense layer behind the last hidden one.
//   kernel-width: base (3:32)(3:32)(3:64) -> ksize (every kernel 3 -> 5) -> width (every
//           convolution 1.5x wider).
//
// Methods at every step: NetMorph (nn::deepen with a P-activation, nn::grow_kernel, nn::widen),
// Net2Net (IdMorph identity layers behind a plain ReLU, Net2WiderNet; it has no kernel-size op),
// and "raw": the step's architecture trained from scratch for the same epochs. For the last
// architecture of each chain, "raw-long" trains it from scratch for as many epochs as the whole
// chain took. ReLU everywhere, SGD with momentum.
//
//   build/examples/grow_fashion [--quick] [--seeds N] [--out DIR] [--key=value ...]
//
// Keys: chain (depth | kernel-width | all), epochs (per step), train, validation, test (image
// counts), lr, child_lr (factor after a morph), weight_decay. Writes OUT/grow_fashion_<chain>.csv
// and _mean.csv; exits 1 if a NetMorph child changed a test prediction right after its morph.
#include "experiment.hpp"

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace experiment;
using netmorph::activation_fn;
using netmorph::activation_kind;

const char* const usage =
    "usage: grow_fashion [--quick] [--seeds N] [--out DIR] [--key=value ...]\n"
    "  keys: chain=depth|kernel-width|all epochs train validation test lr child_lr weight_decay\n"
    "        tag (the CSVs are TAG_<chain>.csv, default grow_fashion)\n";

/// Group layer counts (three conv groups, then hidden dense layers) as the paper's notation.
struct depth_arch {
  std::vector<int> groups;  // 4 digits
  std::string digits() const {
    std::string s;
    for (int g : groups)
      s += char('0' + g);
    return s.substr(0, groups[3] == 1 ? 3 : 4);
  }
  std::string notation() const {
    const int channels[3] = {32, 32, 64};
    std::string s;
    for (int g = 0; g < 3; ++g) {
      std::string grp = "(5:" + std::to_string(channels[g]) + ")";
      const int extra = groups[std::size_t(g)] - 1;
      if (extra > 0)
        grp = "[" + grp + "(3:" + std::to_string(channels[g]) +
              (extra > 1 ? "x" + std::to_string(extra) : std::string()) + ")]";
      s += grp;
    }
    return s;
  }
  /// The notation and the hidden dense layers, for messages.
  std::string describe() const {
    return notation() + " + " + std::to_string(groups[3]) + " x dense 64";
  }
};

nn::architecture_options template_for(int hidden_layers, std::uint64_t seed) {
  nn::architecture_options t;
  t.act = activation_fn{activation_kind::relu};
  t.dense_head.assign(std::size_t(hidden_layers), 64);
  t.seed = seed;
  return t;
}

/// Names of the top-level layers of each group: conv/dense layers between poolings (groups 0-2),
/// and the hidden dense layers (group 3; the output layer excluded).
std::vector<std::vector<std::string>> group_layers(const model& m) {
  std::vector<std::vector<std::string>> g(4);
  std::size_t cur = 0;
  std::vector<std::string> dense;
  for (const auto& l : m.layers()) {
    if (l->kind() == nn::layer_kind::pool2d) ++cur;
    if (l->kind() == nn::layer_kind::conv2d && cur < 3) g[cur].push_back(l->name());
    if (l->kind() == nn::layer_kind::dense) dense.push_back(l->name());
  }
  dense.pop_back();
  g[3] = dense;
  return g;
}

/// Adds a layer behind group `g`'s last layer: NetMorph's deepen (K1 = its kernel, K2 = 3, a
/// P-activation between), or Net2Net's (an identity behind a plain ReLU).
void add_layer(model& m, std::size_t g, bool net2net, std::uint64_t seed) {
  const std::string last = group_layers(m)[g].back();
  netmorph::deepen_options o;
  o.seed = seed;
  if (g < 3) o.k2 = 3;
  if (net2net) o.algorithm = netmorph::depth_algorithm::idmorph;
  const auto r = nn::deepen(m, last, o);
  if (!r.exact) throw std::runtime_error("deepen of '" + last + "' is not exact");
  if (net2net) {
    nn::layer_list<Scalar> relu;
    relu.push_back(std::make_unique<nn::activation<Scalar>>(activation_fn{activation_kind::relu}));
    m.replace(last + ".1", 1, std::move(relu));
  }
}

struct step_result {
  std::map<std::string, std::vector<double>> test;  // method -> final test accuracy per seed
  std::map<std::string, std::vector<double>> kept;  // method -> fraction of predictions kept
};

/// Checks and records each step's children on the test set.
struct runner {
  const data_sets& d;
  bool all_preserved = true;

  /// Checks and records what the morph did to the test predictions.
  void check(model& parent, model& child, const std::string& method, bool must, step_result& r) {
    const index_type changed = prediction_changes(parent, child, d.test);
    std::printf("  %s: %lld of %lld test predictions changed by the morph\n", method.c_str(),
                (long long)changed, (long long)d.test.size());
    r.kept[method].push_back(1.0 - double(changed) / double(d.test.size()));
    if (must && changed != 0) all_preserved = false;
  }
  /// Records `m`'s final test accuracy for `method`.
  void record(const std::string& method, model& m, step_result& r) {
    r.test[method].push_back(nn::evaluate(m, d.test).accuracy);
  }
};

/// An epoch hook that appends (cost, test accuracy) to `c`.
epoch_hook hook_into(curve& c) {
  return [&c](const model&, const progress& q, const nn::epoch_report&, const nn::epoch_report& t) {
    c.cost.push_back(q.cost);
    c.accuracy.push_back(t.accuracy);
  };
}

void print_step(const std::string& step, const step_result& r) {
  std::printf("  step %-6s", step.c_str());
  for (const auto& kv : r.test) {
    const auto ms = mean_std(kv.second);
    std::printf("  %s %.4f +- %.4f", kv.first.c_str(), ms.first, ms.second);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse_options(
      argc, argv, usage,
      {"chain", "epochs", "train", "validation", "test", "lr", "child_lr", "weight_decay", "tag"});
  const std::string tag = o.text("tag", "grow_fashion");
  const std::string chain = o.text("chain", "all");
  if (chain != "depth" && chain != "kernel-width" && chain != "all")
    throw std::runtime_error("--chain=" + chain + ": depth, kernel-width or all");
  const int epochs = int(o.number("epochs", o.quick ? 1 : 3));
  const data_sets d = fashion_mnist(index_type(o.number("train", o.quick ? 400 : 5000)),
                                    index_type(o.number("validation", o.quick ? 200 : 1000)),
                                    index_type(o.number("test", o.quick ? 300 : 5000)));
  make_dir(o.out);
  std::printf("%s: %lld train, %lld validation, %lld test images; %d epoch(s) per step\n",
              d.name.c_str(), (long long)d.train.size(), (long long)d.validation.size(),
              (long long)d.test.size(), epochs);
  schedule fresh;
  fresh.epochs = epochs;
  fresh.opt = nn::sgd{o.number("lr", 0.01), 0.9, o.number("weight_decay", 0.0)};
  schedule after = fresh;
  after.opt.set_lr(after.opt.lr() * o.number("child_lr", 1.0));
  std::vector<std::string> summary;
  bool all_preserved = true;

  auto run_chain = [&](const std::string& name) {
    recorder rec(o.out + "/" + tag + "_" + name + ".csv");
    runner run{d};
    std::map<std::string, step_result> steps;
    std::vector<std::string> order;
    std::map<std::string, std::vector<curve>> curves;  // the last architecture's cost view
    for (int seed = 1; seed <= o.seeds; ++seed) {
      const std::uint64_t s = std::uint64_t(seed);
      if (name == "depth") {
        const std::vector<std::vector<int>> archs{
            {1, 1, 1, 1}, {2, 1, 1, 1}, {2, 2, 2, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}};
        depth_arch a{archs[0]};
        model base = nn::parse_architecture<Scalar>(a.notation(), {1, 28, 28}, template_for(1, s));
        progress pb;
        curve cn;  // the morphed paths' test accuracy against cost, from the first parent on
        train(base, d, fresh, "netmorph", seed, pb, rec, hook_into(cn));  // both paths' parent
        curve c2 = cn;
        model nm = base, n2 = base;
        progress pn = pb, p2 = pb;
        if (seed == 1) order.push_back(a.digits());
        steps[a.digits()].test["netmorph"].push_back(nn::evaluate(base, d.test).accuracy);
        for (std::size_t k = 1; k < archs.size(); ++k) {
          const depth_arch next{archs[k]};
          step_result& r = steps[next.digits()];
          if (seed == 1) order.push_back(next.digits());
          std::printf("step %s -> %s (%s), seed %d\n", a.digits().c_str(), next.digits().c_str(),
                      next.describe().c_str(), seed);
          model nm_parent = nm, n2_parent = n2;
          for (std::size_t g = 0; g < 4; ++g)
            for (int add = a.groups[g]; add < next.groups[g]; ++add) {
              add_layer(nm, g, false, s * 100 + k * 10 + g);
              add_layer(n2, g, true, s * 100 + k * 10 + g);
            }
          run.check(nm_parent, nm, "netmorph", true, r);
          run.check(n2_parent, n2, "net2net", false, r);
          const bool last = k + 1 == archs.size();
          train(nm, d, after, "netmorph", seed, pn, rec, hook_into(cn));
          train(n2, d, after, "net2net", seed, p2, rec, hook_into(c2));
          model raw = nn::parse_architecture<Scalar>(next.notation(), {1, 28, 28},
                                                     template_for(next.groups[3], 1000 + s));
          progress pr;
          train(raw, d, fresh, "raw-" + next.digits(), seed, pr, rec);
          run.record("netmorph", nm, r);
          run.record("net2net", n2, r);
          run.record("raw", raw, r);
          if (last) {
            curves["netmorph"].push_back(cn);
            curves["net2net"].push_back(c2);
            schedule long_s = fresh;
            long_s.epochs = epochs * int(archs.size());
            model raw_long = nn::parse_architecture<Scalar>(next.notation(), {1, 28, 28},
                                                            template_for(next.groups[3], 2000 + s));
            progress pl;
            curve cl;
            train(raw_long, d, long_s, "raw-long", seed, pl, rec, hook_into(cl));
            curves["raw-long"].push_back(cl);
            r.test["raw-long"].push_back(nn::evaluate(raw_long, d.test).accuracy);
          }
          a = next;
        }
      } else {
        const std::string base_n = "(3:32)(3:32)(3:64)", ksize_n = "(5:32)(5:32)(5:64)",
                          width_n = "(5:48)(5:48)(5:96)";
        model base = nn::parse_architecture<Scalar>(base_n, {1, 28, 28}, template_for(1, s));
        progress pb;
        curve cn;
        train(base, d, fresh, "netmorph", seed, pb, rec, hook_into(cn));
        if (seed == 1) order = {"base", "ksize", "width"};
        steps["base"].test["netmorph"].push_back(nn::evaluate(base, d.test).accuracy);
        // base -> ksize: every kernel 3 -> 5 (NetMorph only; Net2Net has no such op).
        model nm = base;
        for (const auto& g : group_layers(nm))
          for (const auto& l : g)
            if (nm.find(l).kind() == nn::layer_kind::conv2d) {
              netmorph::grow_kernel_options go;
              go.new_kernel = 5;
              go.seed = s;
              nn::grow_kernel(nm, l, go);
            }
        step_result& rk = steps["ksize"];
        run.check(base, nm, "netmorph", true, rk);
        progress pn = pb;
        train(nm, d, after, "netmorph", seed, pn, rec, hook_into(cn));
        model raw_k =
            nn::parse_architecture<Scalar>(ksize_n, {1, 28, 28}, template_for(1, 1000 + s));
        progress pr;
        train(raw_k, d, fresh, "raw-ksize", seed, pr, rec);
        run.record("netmorph", nm, rk);
        run.record("raw", raw_k, rk);
        // ksize -> width: every convolution 1.5x wider (NetMorph's rule, Net2Net's replicas).
        model n2 = nm;
        progress p2 = pn;
        const model ksize_parent = nm;
        const std::vector<std::vector<std::string>> groups = group_layers(nm);
        for (std::size_t g = 0; g < 3; ++g)
          for (const auto& l : groups[g]) {
            netmorph::widen_options w;
            w.new_channels = nn::layer_cast<nn::conv2d>(&nm.find(l))->weight().value.dim(0) * 3 / 2;
            w.seed = s * 10 + g;
            nn::widen(nm, l, w);
            w.rule = netmorph::width_rule::net2net;
            nn::widen(n2, l, w);
          }
        step_result& rw = steps["width"];
        model kp = ksize_parent;
        run.check(kp, nm, "netmorph", true, rw);
        run.check(kp, n2, "net2net", false, rw);
        curve c2 = cn, cl;
        train(nm, d, after, "netmorph", seed, pn, rec, hook_into(cn));
        train(n2, d, after, "net2net", seed, p2, rec, hook_into(c2));
        model raw_w =
            nn::parse_architecture<Scalar>(width_n, {1, 28, 28}, template_for(1, 1000 + s));
        progress pw;
        train(raw_w, d, fresh, "raw-width", seed, pw, rec);
        run.record("netmorph", nm, rw);
        run.record("net2net", n2, rw);
        run.record("raw", raw_w, rw);
        schedule long_s = fresh;
        long_s.epochs = epochs * 3;
        model raw_long =
            nn::parse_architecture<Scalar>(width_n, {1, 28, 28}, template_for(1, 2000 + s));
        progress pl;
        train(raw_long, d, long_s, "raw-long", seed, pl, rec, hook_into(cl));
        rw.test["raw-long"].push_back(nn::evaluate(raw_long, d.test).accuracy);
        curves["netmorph"].push_back(cn);
        curves["net2net"].push_back(c2);
        curves["raw-long"].push_back(cl);
      }
    }
    write_means(rec.path(), o.out + "/" + tag + "_" + name + "_mean.csv");
    std::printf("\nchain %s, test accuracy after each step's training (%d seed(s), mean +- std):\n",
                name.c_str(), o.seeds);
    for (const std::string& st : order)
      print_step(st, steps[st]);
    const curve raw = mean_curve(curves["raw-long"]);
    const double target = raw.accuracy.back(), raw_cost = raw.cost.back();
    std::printf("cost to reach raw-long's final test accuracy %.4f (raw-long: %.3g FLOPs):\n",
                target, raw_cost);
    for (const char* m : {"netmorph", "net2net"}) {
      const double c = cost_to_reach(mean_curve(curves[m]), target);
      if (c < 0)
        std::printf("  %-9s never (final %.4f at %.3g FLOPs)\n", m,
                    mean_curve(curves[m]).accuracy.back(), mean_curve(curves[m]).cost.back());
      else
        std::printf("  %-9s %.3g FLOPs = %.0f %% of raw-long's\n", m, c, 100.0 * c / raw_cost);
    }
    std::printf("CSV: %s\n", rec.path().c_str());
    all_preserved = all_preserved && run.all_preserved;
  };
  if (chain == "depth" || chain == "all") run_chain("depth");
  if (chain == "kernel-width" || chain == "all") run_chain("kernel-width");
  if (!all_preserved) {
    std::printf("FAILED: a NetMorph child changed a test prediction right after its morph\n");
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "grow_fashion: %s\n", e.what());
  return 2;
}

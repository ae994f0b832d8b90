// One SGD training step (zero_grad, forward in training mode, softmax cross-entropy, backward,
// SGD with momentum 0.9) at batch 64 in float, in netmorph and, when the build found LibTorch
// (NETMORPH_BENCH_WITH_TORCH), in LibTorch on the same inputs and labels in the same run.
//
// Models:
//   mlp: 784-50-10 on flat inputs, ReLU after the hidden layer.
//   cnn: "(5:32)(5:32)(5:64)" on 1x28x28 from parse_architecture's default template: each 5x5
//        convolution (padding 2, bias) is followed by ReLU and 2x2 max pooling (28 -> 14 -> 7 ->
//        3), then flatten and a dense 576 -> 10 head.
//
// The "samples_per_s" counter is 64 samples per step over wall time. Thread counts: netmorph
// threads through OpenMP (the conv layers' sample loops, ReLU, pooling, and Eigen's GEMM in the
// dense layers), so OMP_NUM_THREADS sets them; the LibTorch benchmarks call
// torch::set_num_threads with the same number. Run the program once per thread count, e.g.
// OMP_NUM_THREADS=1 ./bench_train. The netmorph step runs through nn::model, which keeps its
// per-layer buffers from one iteration to the next, as in nn::train_epoch.

#include <netmorph/nn/layers.hpp>
#include <netmorph/nn/model.hpp>
#include <netmorph/nn/notation.hpp>
#include <netmorph/tensor.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#if defined(NETMORPH_BENCH_WITH_TORCH)
#include <torch/torch.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using netmorph::index_type;
namespace nn = netmorph::nn;

constexpr index_type batch = 64;
constexpr index_type classes = 10;
constexpr double learning_rate = 0.01;
constexpr double momentum = 0.9;

enum class model_kind { mlp, cnn };

netmorph::shape_type sample_shape(model_kind k) {
  return k == model_kind::mlp ? netmorph::shape_type{784} : netmorph::shape_type{1, 28, 28};
}

// One batch of standard-normal inputs and uniform labels, drawn once with a fixed seed and shared
// by both frameworks.
struct batch_data {
  netmorph::tensor<float> x;
  std::vector<int> labels;
};

batch_data make_batch(model_kind k) {
  std::mt19937_64 rng(20240611);
  netmorph::shape_type s = sample_shape(k);
  s.insert(s.begin(), batch);
  batch_data b{netmorph::tensor<float>::random_normal(s, rng), {}};
  std::uniform_int_distribution<int> label(0, int(classes) - 1);
  for (index_type i = 0; i < batch; ++i)
    b.labels.push_back(label(rng));
  return b;
}

nn::model<float> make_netmorph_model(model_kind k) {
  if (k == model_kind::cnn) {
    return nn::parse_architecture<float>("(5:32)(5:32)(5:64)", {1, 28, 28},
                                         nn::architecture_options{});
  }
  std::mt19937_64 rng(7);
  nn::model<float> m({784});
  m.add(nn::dense<float>::he(784, 50, rng));
  m.add(nn::activation<float>(netmorph::activation_fn{netmorph::activation_kind::relu}));
  m.add(nn::dense<float>::he(50, classes, rng));
  return m;
}

void set_rate(benchmark::State& state) {
  state.counters["samples_per_s"] =
      benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
}

template <model_kind Kind>
void BM_netmorph_train_step(benchmark::State& state) {
  const batch_data data = make_batch(Kind);
  nn::model<float> m = make_netmorph_model(Kind);
  const nn::sgd opt{learning_rate, momentum, 0.0};
  for (auto _ : state) {
    m.zero_grad();
    const nn::loss_report<float> l =
        nn::softmax_cross_entropy(m.forward(data.x, true), data.labels);
    m.backward(l.grad);
    opt.step(m);
    benchmark::DoNotOptimize(l.loss);
    benchmark::ClobberMemory();
  }
  set_rate(state);
  // OMP_NUM_THREADS caps both the conv layers' sample loop and Eigen's GEMM.
  state.counters["threads"] = Eigen::nbThreads();
}

#if defined(NETMORPH_BENCH_WITH_TORCH)

// The thread count the netmorph benchmarks get from OMP_NUM_THREADS, so both sides match.
int requested_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

torch::nn::Sequential make_torch_model(model_kind k) {
  namespace tnn = torch::nn;
  if (k == model_kind::mlp) {
    return tnn::Sequential(tnn::Linear(784, 50), tnn::ReLU(), tnn::Linear(50, classes));
  }
  auto conv = [](int64_t in, int64_t out) {
    return tnn::Conv2d(tnn::Conv2dOptions(in, out, 5).padding(2));
  };
  return tnn::Sequential(conv(1, 32), tnn::ReLU(), tnn::MaxPool2d(2),   //
                         conv(32, 32), tnn::ReLU(), tnn::MaxPool2d(2),  //
                         conv(32, 64), tnn::ReLU(), tnn::MaxPool2d(2),  //
                         tnn::Flatten(), tnn::Linear(64 * 3 * 3, classes));
}

template <model_kind Kind>
void BM_torch_train_step(benchmark::State& state) {
  torch::set_num_threads(requested_threads());
  torch::manual_seed(7);
  const batch_data data = make_batch(Kind);
  std::vector<int64_t> xs(data.x.shape().begin(), data.x.shape().end());
  const torch::Tensor x =
      torch::from_blob(const_cast<float*>(data.x.data()), xs, torch::kFloat).clone();
  const torch::Tensor y =
      torch::tensor(std::vector<int64_t>(data.labels.begin(), data.labels.end()), torch::kLong);
  torch::nn::Sequential net = make_torch_model(Kind);
  net->train();
  torch::optim::SGD opt(net->parameters(),
                        torch::optim::SGDOptions(learning_rate).momentum(momentum));
  torch::nn::CrossEntropyLoss loss_fn;
  for (auto _ : state) {
    opt.zero_grad();
    torch::Tensor loss = loss_fn(net->forward(x), y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss.data_ptr());
    benchmark::ClobberMemory();
  }
  set_rate(state);
  state.counters["threads"] = torch::get_num_threads();
}

#endif  // NETMORPH_BENCH_WITH_TORCH

void configure(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kMicrosecond);
  // Wall time: worker threads' CPU time is invisible to the main thread's clock.
  b->UseRealTime();
}

}  // namespace

BENCHMARK_TEMPLATE(BM_netmorph_train_step, model_kind::mlp)->Apply(configure);
BENCHMARK_TEMPLATE(BM_netmorph_train_step, model_kind::cnn)->Apply(configure);
#if defined(NETMORPH_BENCH_WITH_TORCH)
BENCHMARK_TEMPLATE(BM_torch_train_step, model_kind::mlp)->Apply(configure);
BENCHMARK_TEMPLATE(BM_torch_train_step, model_kind::cnn)->Apply(configure);
#endif

BENCHMARK_MAIN();

#ifndef NETMORPH_TESTS_NN_SUPPORT_HPP
#define NETMORPH_TESTS_NN_SUPPORT_HPP

// Helpers of the nn tests: a small synthetic image task and the whole state of a model.

#include "support/test_support.hpp"

#include <netmorph/nn.hpp>

#include <random>
#include <vector>

namespace nmtest {

/// Two Gaussian blobs per class (three classes) in 1x8x8 images: a small task a conv net learns
/// in a few epochs.
template <typename Scalar>
netmorph::nn::dataset<Scalar> synthetic(idx n, std::mt19937_64& rng) {
  netmorph::nn::dataset<Scalar> d{tensor<Scalar>({n, 1, 8, 8}), {}};
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

/// Every parameter value, gradient and optimizer state (velocity, Adam's moments and step count)
/// of a model, in order, for exact comparisons.
template <typename Scalar>
std::vector<tensor<Scalar>> state_of(netmorph::nn::model<Scalar>& m) {
  std::vector<tensor<Scalar>> out;
  for (auto* p : m.parameters()) {
    out.push_back(p->value);
    out.push_back(p->grad);
    out.push_back(p->velocity);
    out.push_back(p->exp_avg);
    out.push_back(p->exp_avg_sq);
    out.push_back(tensor<Scalar>({1}, static_cast<Scalar>(p->step)));
  }
  return out;
}

/// A model trained for one epoch of the synthetic task: `(3:6)(3:6)` on 1x8x8 with batch norm,
/// ELU(1), a dense head of 8 and 3 classes, and a residual block `res` (a parallel block whose
/// first path is one 3x3 convolution, the second the identity) after layer 4, trained one epoch
/// with SGD and one with AdamW. Its velocities, Adam moments and steps, batch-norm statistics and
/// generator have all moved, so a morph that changes any of them shows.
inline netmorph::nn::model<double> trained_block_model() {
  namespace nn = netmorph::nn;
  std::mt19937_64 rng(77);
  const auto data = synthetic<double>(12, rng);
  nn::architecture_options t;
  t.classes = 3;
  t.batch_norm = true;
  t.dense_head = {8};
  t.act = netmorph::activation_fn{netmorph::activation_kind::elu, 1.0};
  auto m = nn::parse_architecture<double>("(3:6)(3:6)", {1, 8, 8}, t);
  std::vector<nn::layer_list<double>> paths(2);
  paths[0].push_back(std::make_unique<nn::conv2d<double>>(
      randn<double>({6, 6, 3, 3}, rng), randn<double>({6}, rng), netmorph::conv2d_options{1, 1}));
  nn::model<double> out(m.input_shape(), 3);
  for (const auto& l : m.layers()) {
    auto c = l->clone();
    nn::visit(*c, [&](auto& concrete) { out.add(concrete, l->name()); });
    if (l->name() == "4") out.add(nn::parallel<double>(std::move(paths)), "res");
  }
  nn::train_epoch(out, data, nn::sgd{0.01, 0.9, 1e-4}, 4);
  nn::train_epoch(out, data, nn::adamw(1e-3, 1e-4), 4);  // Adam's moments and steps too
  return out;
}

}  // namespace nmtest

#endif  // NETMORPH_TESTS_NN_SUPPORT_HPP

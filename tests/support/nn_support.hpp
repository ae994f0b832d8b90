#ifndef NETMORPH_TESTS_NN_SUPPORT_HPP
#define NETMORPH_TESTS_NN_SUPPORT_HPP

// Helpers of the nn tests: a small synthetic image task and the whole state of a model.

#include "support/test_support.hpp"

#include <netmorph/nn/model.hpp>

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

/// Every parameter value, gradient and velocity of a model, in order, for exact comparisons.
template <typename Scalar>
std::vector<tensor<Scalar>> state_of(netmorph::nn::model<Scalar>& m) {
  std::vector<tensor<Scalar>> out;
  for (auto* p : m.parameters()) {
    out.push_back(p->value);
    out.push_back(p->grad);
    out.push_back(p->velocity);
  }
  return out;
}

}  // namespace nmtest

#endif  // NETMORPH_TESTS_NN_SUPPORT_HPP

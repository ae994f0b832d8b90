#ifndef NETMORPH_NN_LAYERS_DROPOUT_HPP
#define NETMORPH_NN_LAYERS_DROPOUT_HPP

/// \file dropout.hpp
/// `nn::dropout`: inverted dropout.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// Inverted dropout: in training, zero each value with probability `p` and scale the rest by
/// `1/(1-p)`; the identity in inference.
template <typename Scalar>
class dropout : public layer<Scalar> {
 public:
  explicit dropout(double p) : p_(p) {
    netmorph::detail::require<value_error>(p >= 0 && p < 1,
                                           "nn::dropout: p must be in [0, 1), got ", p);
  }
  static constexpr layer_kind static_kind = layer_kind::dropout;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override { return netmorph::detail::cat("dropout ", p_); }
  double rate() const { return p_; }
  shape_type output_shape(const shape_type& in) const override { return in; }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    netmorph::detail::ensure_shape(y, x.shape());
    // An inference pass leaves the mask of the last training pass for its backward pass.
    if (!training || p_ == 0) {
      if (training) {
        mask_ = tensor<Scalar>();
        out_shape_ = x.shape();
      }
      std::copy(x.begin(), x.end(), y.begin());
      return;
    }
    netmorph::detail::require<error>(rng_ != nullptr,
                                     "nn::dropout: no random generator (add it to a model)");
    netmorph::detail::ensure_shape(mask_, x.shape());
    out_shape_ = x.shape();
    std::bernoulli_distribution keep(1 - p_);
    const Scalar scale = static_cast<Scalar>(1.0 / (1.0 - p_));
    for (index_type i = 0; i < x.size(); ++i) {
      mask_.data()[i] = keep(*rng_) ? scale : Scalar(0);
      y.data()[i] = x.data()[i] * mask_.data()[i];
    }
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    netmorph::detail::require<error>(
        !out_shape_.empty(),
        "nn::dropout::backward: no cached input (call forward with training = true)");
    detail::require_gradient_shape(dy.shape(), out_shape_, "nn::dropout");
    netmorph::detail::ensure_shape(dx, dy.shape());
    if (mask_.empty()) {
      std::copy(dy.begin(), dy.end(), dx.begin());
      return;
    }
    for (index_type i = 0; i < dx.size(); ++i)
      dx.data()[i] = dy.data()[i] * mask_.data()[i];
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<dropout>(*this); }
  void set_rng(std::mt19937_64* rng) override { rng_ = rng; }

 private:
  double p_;
  std::mt19937_64* rng_ = nullptr;
  tensor<Scalar> mask_;
  shape_type out_shape_;  // of the last training pass
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_DROPOUT_HPP

#ifndef NETMORPH_NN_LAYERS_BATCH_NORM_HPP
#define NETMORPH_NN_LAYERS_BATCH_NORM_HPP

/// \file batch_norm.hpp
/// `nn::batch_norm`: batch normalisation with trainable scale and shift and running statistics.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/ops/batch_norm.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// Batch normalisation over the channel axis of `(N, C, ...)`. Training mode normalises with
/// the batch statistics and updates the running ones (`momentum` 0.1, unbiased variance, as
/// PyTorch); inference mode uses the running statistics.
template <typename Scalar>
class batch_norm : public layer<Scalar> {
 public:
  explicit batch_norm(batch_norm_weights<Scalar> bn, double momentum = 0.1)
      : gamma_("gamma", bn.gamma),
        beta_("beta", bn.beta),
        mean_(bn.running_mean),
        var_(bn.running_var),
        eps_(bn.eps),
        momentum_(momentum) {
    netmorph::detail::check_batch_norm(bn, -1, "nn::batch_norm");
  }
  static constexpr layer_kind static_kind = layer_kind::batch_norm;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override {
    return netmorph::detail::cat("batch_norm ", gamma_.value.size(), " eps ", eps_, " momentum ",
                                 momentum_);
  }
  shape_type output_shape(const shape_type& in) const override {
    netmorph::detail::require<shape_error>(!in.empty() && in[0] == gamma_.value.size(),
                                           "nn::batch_norm: input has ", in.empty() ? 0 : in[0],
                                           " channels, expected ", gamma_.value.size());
    return in;
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    netmorph::detail::require<shape_error>(x.rank() >= 2,
                                           "nn::batch_norm: input must be (N, C, ...), got shape ",
                                           netmorph::detail::shape_string(x.shape()));
    const index_type n = x.dim(0), c = x.dim(1), inner = x.size() / std::max<index_type>(1, n * c);
    netmorph::detail::require<shape_error>(c == gamma_.value.size(), "nn::batch_norm: input has ",
                                           c, " channels, expected ", gamma_.value.size());
    netmorph::detail::ensure_shape(y, x.shape());
    if (training) {
      netmorph::detail::ensure_shape(xhat_, x.shape());
      inv_std_.assign(static_cast<std::size_t>(c), 0.0);
    }
    const double m = double(n * inner);
    for (index_type ch = 0; ch < c; ++ch) {
      double mu, var;
      if (training) {
        double s = 0, ss = 0;
        for (index_type sidx = 0; sidx < n; ++sidx)
          for (index_type i = 0; i < inner; ++i)
            s += x.data()[(sidx * c + ch) * inner + i];
        mu = s / m;
        for (index_type sidx = 0; sidx < n; ++sidx)
          for (index_type i = 0; i < inner; ++i) {
            const double d = x.data()[(sidx * c + ch) * inner + i] - mu;
            ss += d * d;
          }
        var = ss / m;
        mean_(ch) = static_cast<Scalar>((1 - momentum_) * mean_(ch) + momentum_ * mu);
        var_(ch) = static_cast<Scalar>((1 - momentum_) * var_(ch) +
                                       momentum_ * (m > 1 ? ss / (m - 1) : var));
      } else {
        mu = mean_(ch);
        var = var_(ch);
      }
      const double inv = 1.0 / std::sqrt(var + eps_);
      if (training) inv_std_[static_cast<std::size_t>(ch)] = inv;
      for (index_type sidx = 0; sidx < n; ++sidx)
        for (index_type i = 0; i < inner; ++i) {
          const index_type o = (sidx * c + ch) * inner + i;
          const double xh = (x.data()[o] - mu) * inv;
          if (training) xhat_.data()[o] = static_cast<Scalar>(xh);
          y.data()[o] = static_cast<Scalar>(gamma_.value(ch) * xh + beta_.value(ch));
        }
    }
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    netmorph::detail::require<error>(
        !inv_std_.empty(),
        "nn::batch_norm::backward: no cached input (call forward with training = true)");
    detail::require_gradient_shape(dy.shape(), xhat_.shape(), "nn::batch_norm");
    const index_type n = dy.dim(0), c = dy.dim(1),
                     inner = dy.size() / std::max<index_type>(1, n * c);
    const double m = double(n * inner);
    netmorph::detail::ensure_shape(dx, dy.shape());
    for (index_type ch = 0; ch < c; ++ch) {
      double sdy = 0, sdyx = 0;
      for (index_type sidx = 0; sidx < n; ++sidx)
        for (index_type i = 0; i < inner; ++i) {
          const index_type o = (sidx * c + ch) * inner + i;
          sdy += dy.data()[o];
          sdyx += double(dy.data()[o]) * xhat_.data()[o];
        }
      gamma_.grad(ch) += static_cast<Scalar>(sdyx);
      beta_.grad(ch) += static_cast<Scalar>(sdy);
      const double g = gamma_.value(ch) * inv_std_[static_cast<std::size_t>(ch)];
      for (index_type sidx = 0; sidx < n; ++sidx)
        for (index_type i = 0; i < inner; ++i) {
          const index_type o = (sidx * c + ch) * inner + i;
          dx.data()[o] =
              static_cast<Scalar>(g * (dy.data()[o] - sdy / m - xhat_.data()[o] * sdyx / m));
        }
    }
  }
  std::vector<parameter<Scalar>*> parameters() override { return {&gamma_, &beta_}; }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<batch_norm>(*this);
  }

  /// The parameters and running statistics as a plain value (what the weight-level morphs take).
  batch_norm_weights<Scalar> weights() const {
    return batch_norm_weights<Scalar>{gamma_.value, beta_.value, mean_, var_, eps_};
  }
  parameter<Scalar>& gamma() { return gamma_; }
  parameter<Scalar>& beta() { return beta_; }
  tensor<Scalar>& running_mean() { return mean_; }
  tensor<Scalar>& running_var() { return var_; }
  const parameter<Scalar>& gamma() const { return gamma_; }
  const parameter<Scalar>& beta() const { return beta_; }
  const tensor<Scalar>& running_mean() const { return mean_; }
  const tensor<Scalar>& running_var() const { return var_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }

 private:
  parameter<Scalar> gamma_, beta_;
  tensor<Scalar> mean_, var_;
  double eps_, momentum_;
  tensor<Scalar> xhat_;
  std::vector<double> inv_std_;
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_BATCH_NORM_HPP

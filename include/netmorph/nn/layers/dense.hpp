#ifndef NETMORPH_NN_LAYERS_DENSE_HPP
#define NETMORPH_NN_LAYERS_DENSE_HPP

/// \file dense.hpp
/// `nn::dense`: a fully connected layer with its trainable weight and bias.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/ops/dense.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// Fully connected layer on `(N, in)`.
template <typename Scalar>
class dense : public layer<Scalar> {
 public:
  dense(tensor<Scalar> weight, tensor<Scalar> bias)
      : weight_("weight", std::move(weight)), has_bias_(!bias.empty()) {
    netmorph::detail::require<shape_error>(weight_.value.rank() == 2,
                                           "nn::dense: weight must be (out, in), got shape ",
                                           netmorph::detail::shape_string(weight_.value.shape()));
    netmorph::detail::require<shape_error>(
        bias.empty() || bias.shape() == shape_type{weight_.value.dim(0)},
        "nn::dense: bias must have shape (", weight_.value.dim(0), "), got ",
        netmorph::detail::shape_string(bias.shape()));
    bias_ = parameter<Scalar>("bias",
                              has_bias_ ? std::move(bias) : tensor<Scalar>({weight_.value.dim(0)}));
  }

  /// He-initialised `(out, in)` with zero bias.
  template <typename Rng>
  static dense he(index_type in, index_type out, Rng& rng) {
    return dense(tensor<Scalar>::random_normal({out, in}, rng, std::sqrt(2.0 / double(in))),
                 tensor<Scalar>({out}));
  }

  static constexpr layer_kind static_kind = layer_kind::dense;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override {
    return netmorph::detail::cat("dense ", weight_.value.dim(1), "->", weight_.value.dim(0),
                                 has_bias_ ? "" : " no bias");
  }
  shape_type output_shape(const shape_type& in) const override {
    detail::require_rank(in, 1, "nn::dense");
    netmorph::detail::require<shape_error>(in[0] == weight_.value.dim(1), "nn::dense: input has ",
                                           in[0], " features, weight expects ",
                                           weight_.value.dim(1));
    return {weight_.value.dim(0)};
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    netmorph::detail::dense_into(x, weight_.value, has_bias_ ? bias_.value : tensor<Scalar>(), y,
                                 "nn::dense");
    if (training) x_.refer(x);
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    const index_type out = weight_.value.dim(0), in = weight_.value.dim(1);
    const tensor<Scalar>* x = &detail::cached_input(x_, "nn::dense");
    const index_type n = x->dim(0);
    detail::require_gradient_shape(dy.shape(), {n, out}, "nn::dense");
    const auto dym = dy.matrix(n, out);
    weight_.grad.matrix(out, in).noalias() += dym.transpose() * x->matrix(n, in);
    if (has_bias_) bias_.grad.vector() += dym.colwise().sum().transpose();
    if (!this->input_grad()) {
      dx = tensor<Scalar>();
      return;
    }
    netmorph::detail::ensure_shape(dx, {n, in});
    dx.matrix(n, in).noalias() = dym * weight_.value.matrix(out, in);
  }
  std::vector<parameter<Scalar>*> parameters() override {
    if (has_bias_) return {&weight_, &bias_};
    return {&weight_};
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<dense>(*this); }

  /// The weights as a plain value (what the weight-level morphs take).
  dense_weights<Scalar> weights() const {
    return dense_weights<Scalar>{weight_.value, has_bias_ ? bias_.value : tensor<Scalar>()};
  }
  bool has_bias() const { return has_bias_; }
  parameter<Scalar>& weight() { return weight_; }
  parameter<Scalar>& bias() { return bias_; }
  const parameter<Scalar>& weight() const { return weight_; }
  const parameter<Scalar>& bias() const { return bias_; }

 private:
  parameter<Scalar> weight_, bias_;
  bool has_bias_;
  detail::input_ref<Scalar> x_;
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_DENSE_HPP

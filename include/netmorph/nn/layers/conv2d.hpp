#ifndef NETMORPH_NN_LAYERS_CONV2D_HPP
#define NETMORPH_NN_LAYERS_CONV2D_HPP

/// \file conv2d.hpp
/// `nn::conv2d`: a convolution layer with its trainable weight and bias.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// Convolution layer (stride, zero padding, channel groups, optional bias); im2col + GEMM in both
/// directions, group by group for a grouped or depthwise layer.
template <typename Scalar>
class conv2d : public layer<Scalar> {
 public:
  conv2d(tensor<Scalar> weight, tensor<Scalar> bias, conv2d_options p)
      : weight_("weight", std::move(weight)), options_(p), has_bias_(!bias.empty()) {
    netmorph::detail::check_conv2d_groups(weight_.value, p.groups, "nn::conv2d");
    netmorph::detail::check_conv2d_operands(
        tensor<Scalar>({0, weight_.value.rank() == 4 ? weight_.value.dim(1) * p.groups : 0, 1, 1}),
        weight_.value, bias, "nn::conv2d", p.groups);
    bias_ = parameter<Scalar>("bias",
                              has_bias_ ? std::move(bias) : tensor<Scalar>({weight_.value.dim(0)}));
  }

  /// He-initialised convolution `(out, in, k, k)` with zero bias and "same" padding for odd k.
  template <typename Rng>
  static conv2d he(index_type in, index_type out, index_type k, Rng& rng, index_type stride = 1) {
    return conv2d(
        tensor<Scalar>::random_normal({out, in, k, k}, rng, std::sqrt(2.0 / double(in * k * k))),
        tensor<Scalar>({out}), conv2d_options{stride, (k - 1) / 2});
  }

  static constexpr layer_kind static_kind = layer_kind::conv2d;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override {
    return netmorph::detail::cat(
        "conv2d ", in_channels(), "->", weight_.value.dim(0), " ", weight_.value.dim(2), "x",
        weight_.value.dim(3), " stride ", options_.stride, " padding ", options_.padding,
        options_.groups == 1 ? "" : netmorph::detail::cat(" groups ", options_.groups),
        has_bias_ ? "" : " no bias");
  }
  shape_type output_shape(const shape_type& in) const override {
    detail::require_rank(in, 3, "nn::conv2d");
    netmorph::detail::require<shape_error>(in[0] == in_channels(), "nn::conv2d: input has ", in[0],
                                           " channels, weight expects ", in_channels());
    return {weight_.value.dim(0),
            conv2d_output_size(in[1], weight_.value.dim(2), options_, "nn::conv2d"),
            conv2d_output_size(in[2], weight_.value.dim(3), options_, "nn::conv2d")};
  }

  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    netmorph::detail::check_conv2d_operands(x, weight_.value, bias_.value, "nn::conv2d",
                                            options_.groups);
    if (training) x_.refer(x);
    netmorph::detail::conv2d_forward(x, weight_.value, has_bias_ ? bias_.value.data() : nullptr,
                                     options_, y, ws_);
  }

  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    const tensor<Scalar>* x = &detail::cached_input(x_, "nn::conv2d");
    const index_type c_out = weight_.value.dim(0), kh = weight_.value.dim(2),
                     kw = weight_.value.dim(3);
    const shape_type want{x->dim(0), c_out, conv2d_output_size(x->dim(2), kh, options_),
                          conv2d_output_size(x->dim(3), kw, options_)};
    detail::require_gradient_shape(dy.shape(), want, "nn::conv2d");
    netmorph::detail::conv2d_backward_weight(*x, dy, kh, kw, options_, weight_.grad.data(),
                                             has_bias_ ? bias_.grad.data() : nullptr, ws_);
    if (!this->input_grad()) {
      dx = tensor<Scalar>();
      return;
    }
    netmorph::detail::conv2d_backward_input(dy, weight_.value, options_, x->dim(2), x->dim(3), dx,
                                            ws_);
  }

  std::vector<parameter<Scalar>*> parameters() override {
    if (has_bias_) return {&weight_, &bias_};
    return {&weight_};
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<conv2d>(*this); }

  /// The weights as a plain value (what the weight-level morphs take).
  conv2d_weights<Scalar> weights() const {
    return conv2d_weights<Scalar>{weight_.value, has_bias_ ? bias_.value : tensor<Scalar>(),
                                  options_};
  }
  bool has_bias() const { return has_bias_; }
  /// Input channels: `groups` times the weight's `C_in / groups`.
  index_type in_channels() const { return weight_.value.dim(1) * options_.groups; }
  /// Channel groups (1: an ordinary convolution).
  index_type groups() const { return options_.groups; }
  parameter<Scalar>& weight() { return weight_; }
  parameter<Scalar>& bias() { return bias_; }
  const parameter<Scalar>& weight() const { return weight_; }
  const parameter<Scalar>& bias() const { return bias_; }
  const conv2d_options& options() const { return options_; }

 private:
  parameter<Scalar> weight_, bias_;
  conv2d_options options_;
  bool has_bias_;
  detail::input_ref<Scalar> x_;
  netmorph::detail::conv2d_workspace<Scalar> ws_;
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_CONV2D_HPP

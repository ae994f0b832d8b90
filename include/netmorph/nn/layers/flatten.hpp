#ifndef NETMORPH_NN_LAYERS_FLATTEN_HPP
#define NETMORPH_NN_LAYERS_FLATTEN_HPP

/// \file flatten.hpp
/// `nn::flatten`: `(N, C, H, W) -> (N, C*H*W)`.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// `(N, C, H, W) -> (N, C*H*W)` in NCHW order.
template <typename Scalar>
class flatten : public layer<Scalar> {
 public:
  static constexpr layer_kind static_kind = layer_kind::flatten;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override { return "flatten"; }
  shape_type output_shape(const shape_type& in) const override {
    index_type n = 1;
    for (index_type e : in)
      n *= e;
    return {n};
  }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    if (training) in_shape_ = x.shape();
    const index_type n = x.dim(0);
    netmorph::detail::ensure_shape(y, {n, n ? x.size() / n : 0});
    std::copy(x.begin(), x.end(), y.begin());
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    index_type size = in_shape_.empty() ? 0 : 1;
    for (index_type e : in_shape_)
      size *= e;
    netmorph::detail::require<shape_error>(
        !in_shape_.empty() && dy.size() == size, "nn::flatten::backward: gradient has shape ",
        netmorph::detail::shape_string(dy.shape()), ", the input has ",
        netmorph::detail::shape_string(in_shape_));
    netmorph::detail::ensure_shape(dx, in_shape_);
    std::copy(dy.begin(), dy.end(), dx.begin());
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<flatten>(*this); }

 private:
  shape_type in_shape_;
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_FLATTEN_HPP

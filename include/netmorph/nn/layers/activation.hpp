#ifndef NETMORPH_NN_LAYERS_ACTIVATION_HPP
#define NETMORPH_NN_LAYERS_ACTIVATION_HPP

/// \file activation.hpp
/// `nn::activation`: an elementwise non-linearity `phi`.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/detail/parallel.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/tensor.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// An elementwise activation `phi`.
template <typename Scalar>
class activation : public layer<Scalar> {
 public:
  explicit activation(activation_fn phi) : phi_(phi) {}
  static constexpr layer_kind static_kind = layer_kind::activation;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override {
    return phi_.has_param()
               ? netmorph::detail::cat("activation ", to_string(phi_.kind), " ", phi_.param)
               : netmorph::detail::cat("activation ", to_string(phi_.kind));
  }
  /// The activation function.
  const activation_fn& fn() const { return phi_; }
  shape_type output_shape(const shape_type& in) const override { return in; }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    if (training) x_.refer(x);
    netmorph::detail::ensure_shape(y, x.shape());
    const Scalar* xs = x.data();
    Scalar* ys = y.data();
    const activation_fn phi = phi_;
    netmorph::detail::for_chunks(x.size(), chunk, [&](index_type lo, index_type len) {
      if (phi.kind == activation_kind::relu) {  // vectorised fast path of the common case
        Eigen::Map<vector>(ys + lo, len) =
            Eigen::Map<const vector>(xs + lo, len).cwiseMax(Scalar(0));
        return;
      }
      for (index_type i = lo; i < lo + len; ++i)
        ys[i] = static_cast<Scalar>(phi.value(xs[i]));
    });
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    const tensor<Scalar>* x = &detail::cached_input(x_, "nn::activation");
    detail::require_gradient_shape(dy.shape(), x->shape(), "nn::activation");
    netmorph::detail::ensure_shape(dx, dy.shape());
    const Scalar *xs = x->data(), *gs = dy.data();
    Scalar* ds = dx.data();
    const activation_fn phi = phi_;
    netmorph::detail::for_chunks(dy.size(), chunk, [&](index_type lo, index_type len) {
      if (phi.kind == activation_kind::relu) {
        Eigen::Map<vector>(ds + lo, len) =
            (Eigen::Map<const vector>(xs + lo, len).array() > Scalar(0))
                .select(Eigen::Map<const vector>(gs + lo, len), Scalar(0));
        return;
      }
      for (index_type i = lo; i < lo + len; ++i)
        ds[i] = static_cast<Scalar>(gs[i] * phi.derivative(xs[i]));
    });
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<activation>(*this);
  }

 private:
  using vector = typename tensor<Scalar>::vector_type;
  static constexpr index_type chunk = 1 << 14;
  activation_fn phi_;
  detail::input_ref<Scalar> x_;
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_ACTIVATION_HPP

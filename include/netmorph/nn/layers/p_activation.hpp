#ifndef NETMORPH_NN_LAYERS_P_ACTIVATION_HPP
#define NETMORPH_NN_LAYERS_P_ACTIVATION_HPP

/// \file p_activation.hpp
/// `nn::p_activation`: the parametric activation with a learned `a` (paper §3.3).

#include <netmorph/activations.hpp>
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

/// The parametric activation \f$ (1-a)\phi(x) + a x \f$ with a learned scalar `a`, clamped to
/// [0, 1] after every optimizer step. Inserted by depth morphs at `a = 1` (the identity).
template <typename Scalar>
class p_activation : public layer<Scalar> {
 public:
  explicit p_activation(p_activation_fn p)
      : phi_(make_p_activation(p.phi, p.a).phi),
        a_("a", tensor<Scalar>({1}, static_cast<Scalar>(p.a))) {}
  static constexpr layer_kind static_kind = layer_kind::p_activation;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override {
    return netmorph::detail::cat("p_activation ", to_string(phi_.kind), " a ", double(a_.value(0)));
  }
  /// The parametric activation with the current `a`.
  p_activation_fn fn() const { return p_activation_fn{phi_, double(a_.value(0))}; }
  parameter<Scalar>& a() { return a_; }
  const parameter<Scalar>& a() const { return a_; }
  shape_type output_shape(const shape_type& in) const override { return in; }
  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    if (training) x_.refer(x);
    netmorph::detail::ensure_shape(y, x.shape());
    const p_activation_fn p = fn();
    for (index_type i = 0; i < x.size(); ++i)
      y.data()[i] = static_cast<Scalar>(p.value(double(x.data()[i])));
  }
  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    const tensor<Scalar>& x = detail::cached_input(x_, "nn::p_activation");
    detail::require_gradient_shape(dy.shape(), x.shape(), "nn::p_activation");
    const p_activation_fn p = fn();
    netmorph::detail::ensure_shape(dx, dy.shape());
    double da = 0;
    for (index_type i = 0; i < dx.size(); ++i) {
      const double xi = x.data()[i];
      da += double(dy.data()[i]) * p.da(xi);
      dx.data()[i] = static_cast<Scalar>(dy.data()[i] * p.dx(xi));
    }
    a_.grad(0) += static_cast<Scalar>(da);
  }
  std::vector<parameter<Scalar>*> parameters() override { return {&a_}; }
  void after_step() override {
    a_.value(0) = std::min(Scalar(1), std::max(Scalar(0), a_.value(0)));
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<p_activation>(*this);
  }

 private:
  activation_fn phi_;
  parameter<Scalar> a_;
  detail::input_ref<Scalar> x_;
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_P_ACTIVATION_HPP

#ifndef NETMORPH_OPS_DENSE_HPP
#define NETMORPH_OPS_DENSE_HPP

/// \file dense.hpp
/// Fully connected layer, batched: `y = x W^T + b` with `W` of shape `(out, in)` (PyTorch's
/// `Linear` layout).

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

namespace netmorph {

/// A dense layer's parameters: weight `(out, in)`, bias `(out)` or empty for "no bias".
template <typename Scalar>
struct dense_weights {
  using scalar_type = Scalar;
  tensor<Scalar> weight;
  tensor<Scalar> bias;
};

namespace detail {

/// Dense forward pass into `y`, whose storage is reused when it already has the shape `(N, out)`.
/// Throws `shape_error` naming `who` on mismatched ranks, feature counts or bias length.
template <typename Scalar>
void dense_into(const tensor<Scalar>& x, const tensor<Scalar>& weight, const tensor<Scalar>& bias,
                tensor<Scalar>& y, const char* who) {
  require<shape_error>(x.rank() == 2, who, ": input must be (N, features), got shape ",
                       shape_string(x.shape()));
  require<shape_error>(weight.rank() == 2, who, ": weight must be (out, in), got shape ",
                       shape_string(weight.shape()));
  require<shape_error>(x.dim(1) == weight.dim(1), who, ": input has ", x.dim(1),
                       " features, weight expects ", weight.dim(1));
  require<shape_error>(bias.empty() || (bias.rank() == 1 && bias.dim(0) == weight.dim(0)), who,
                       ": bias must have shape (", weight.dim(0), "), got ",
                       shape_string(bias.shape()));
  const index_type n = x.dim(0), in = x.dim(1), out = weight.dim(0);
  if (y.shape() != shape_type{n, out}) y = tensor<Scalar>({n, out});
  if (y.size() == 0) return;
  auto ym = y.matrix(n, out);
  if (in == 0) {
    ym.setZero();
  } else {
    ym.noalias() = x.matrix(n, in) * weight.matrix(out, in).transpose();
  }
  if (!bias.empty()) ym.rowwise() += bias.vector().transpose();
}

}  // namespace detail

/// Dense forward pass on a batch: \f$ y[n] = W x[n] + b \f$.
///
/// \param x      `(N, in)`
/// \param weight `(out, in)`
/// \param bias   `(out)`, or an empty tensor for no bias
/// \returns      `(N, out)`
/// \throws shape_error on mismatched ranks, feature counts or bias length.
template <typename Scalar>
tensor<Scalar> dense(const tensor<Scalar>& x, const tensor<Scalar>& weight,
                     const tensor<Scalar>& bias = tensor<Scalar>()) {
  tensor<Scalar> y;
  detail::dense_into(x, weight, bias, y, "dense");
  return y;
}

/// Dense forward pass with a layer's weight and bias.
template <typename Scalar>
tensor<Scalar> dense(const tensor<Scalar>& x, const dense_weights<Scalar>& layer) {
  return dense(x, layer.weight, layer.bias);
}

}  // namespace netmorph

#endif  // NETMORPH_OPS_DENSE_HPP

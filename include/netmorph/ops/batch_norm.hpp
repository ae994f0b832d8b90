#ifndef NETMORPH_OPS_BATCH_NORM_HPP
#define NETMORPH_OPS_BATCH_NORM_HPP

/// \file batch_norm.hpp
/// Batch normalisation parameters and the inference-mode forward pass.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

#include <cmath>

namespace netmorph {

/// Per-channel batch-norm parameters and running statistics (each of shape `(C)`).
template <typename Scalar>
struct batch_norm_weights {
  using scalar_type = Scalar;
  tensor<Scalar> gamma, beta, running_mean, running_var;
  double eps = 1e-5;

  index_type channels() const { return gamma.size(); }

  /// gamma = 1, beta = 0, mean = 0, var = 1: the identity up to `1/sqrt(1 + eps)`.
  static batch_norm_weights identity(index_type channels, double eps = 1e-5) {
    return batch_norm_weights{tensor<Scalar>({channels}, Scalar(1)), tensor<Scalar>({channels}),
                              tensor<Scalar>({channels}), tensor<Scalar>({channels}, Scalar(1)),
                              eps};
  }
};

namespace detail {
template <typename Scalar>
void check_batch_norm(const batch_norm_weights<Scalar>& bn, index_type channels, const char* who) {
  const index_type c = bn.gamma.size();
  require<shape_error>(
      bn.gamma.rank() == 1 && bn.beta.shape() == bn.gamma.shape() &&
          bn.running_mean.shape() == bn.gamma.shape() && bn.running_var.shape() == bn.gamma.shape(),
      who, ": batch-norm gamma, beta, mean and var must all have shape (C), got ",
      shape_string(bn.gamma.shape()), ", ", shape_string(bn.beta.shape()), ", ",
      shape_string(bn.running_mean.shape()), ", ", shape_string(bn.running_var.shape()));
  require<shape_error>(channels < 0 || c == channels, who, ": batch norm has ", c,
                       " channels, expected ", channels);
  require<value_error>(bn.eps > 0, who, ": batch-norm eps must be > 0, got ", bn.eps);
  for (index_type ch = 0; ch < c; ++ch)
    require<value_error>(!(bn.running_var(ch) < 0), who,
                         ": batch-norm running variance must be >= 0, got ", bn.running_var(ch),
                         " for channel ", ch);
}
}  // namespace detail

/// Inference-mode batch norm on `(N, C, ...)`:
/// \f$ y = \gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta \f$ per channel.
/// \throws shape_error when the channel counts disagree.
template <typename Scalar>
tensor<Scalar> batch_norm_inference(tensor<Scalar> x, const batch_norm_weights<Scalar>& bn) {
  detail::require<shape_error>(x.rank() >= 2,
                               "batch_norm_inference: input must be (N, C, ...), got ",
                               detail::shape_string(x.shape()));
  detail::check_batch_norm(bn, x.dim(1), "batch_norm_inference");
  const index_type n = x.dim(0), c = x.dim(1), inner = n * c == 0 ? 0 : x.size() / (n * c);
  for (index_type s = 0; s < n; ++s)
    for (index_type ch = 0; ch < c; ++ch) {
      const double scale = double(bn.gamma(ch)) / std::sqrt(double(bn.running_var(ch)) + bn.eps);
      const double shift = double(bn.beta(ch)) - scale * double(bn.running_mean(ch));
      Scalar* p = x.data() + (s * c + ch) * inner;
      for (index_type i = 0; i < inner; ++i)
        p[i] = static_cast<Scalar>(scale * double(p[i]) + shift);
    }
  return x;
}

}  // namespace netmorph

#endif  // NETMORPH_OPS_BATCH_NORM_HPP

#ifndef NETMORPH_ACTIVATIONS_HPP
#define NETMORPH_ACTIVATIONS_HPP

/// \file activations.hpp
/// Activations `phi` and the parametric activations of the paper (§3.3, docs/DESIGN.md §5):
/// \f$ P\phi_a(x) = (1 - a)\,\phi(x) + a\,x \f$, `a` in [0, 1]. At `a = 1` a P-activation is the
/// identity, which is what makes a depth morph exact after any continuous activation.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

#include <cmath>
#include <string>

namespace netmorph {

/// The elementwise non-linearities netmorph knows.
enum class activation_kind { identity, relu, leaky_relu, tanh, sigmoid, elu, softplus, gelu };

inline const char* to_string(activation_kind k) {
  switch (k) {
    case activation_kind::identity:
      return "identity";
    case activation_kind::relu:
      return "relu";
    case activation_kind::leaky_relu:
      return "leaky_relu";
    case activation_kind::tanh:
      return "tanh";
    case activation_kind::sigmoid:
      return "sigmoid";
    case activation_kind::elu:
      return "elu";
    case activation_kind::softplus:
      return "softplus";
    case activation_kind::gelu:
      return "gelu";
  }
  return "unknown";  // not reached: every kind is listed, and -Wswitch names a forgotten one
}

/// An activation `phi` with its parameter (the negative slope of leaky ReLU, the alpha of ELU).
struct activation_fn {
  activation_kind kind = activation_kind::relu;
  double param = 0.01;

  /// \f$ \phi(x) \f$.
  double value(double x) const {
    switch (kind) {
      case activation_kind::identity:
        return x;
      case activation_kind::relu:
        return x > 0 ? x : 0.0;
      case activation_kind::leaky_relu:
        return x > 0 ? x : param * x;
      case activation_kind::tanh:
        return std::tanh(x);
      case activation_kind::sigmoid:
        return 1.0 / (1.0 + std::exp(-x));
      case activation_kind::elu:
        return x > 0 ? x : param * std::expm1(x);
      case activation_kind::softplus:
        return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
      case activation_kind::gelu:
        return 0.5 * x * std::erfc(-x / std::sqrt(2.0));  // exact (erf) GELU
    }
    return std::nan("");  // not reached: every kind is listed (no default: -Wswitch checks)
  }

  /// \f$ \phi'(x) \f$ (the right derivative at a kink).
  double derivative(double x) const {
    switch (kind) {
      case activation_kind::identity:
        return 1.0;
      case activation_kind::relu:
        return x > 0 ? 1.0 : 0.0;
      case activation_kind::leaky_relu:
        return x > 0 ? 1.0 : param;
      case activation_kind::tanh: {
        const double t = std::tanh(x);
        return 1.0 - t * t;
      }
      case activation_kind::sigmoid: {
        const double s = 1.0 / (1.0 + std::exp(-x));
        return s * (1.0 - s);
      }
      case activation_kind::elu:
        return x > 0 ? 1.0 : param * std::exp(x);
      case activation_kind::softplus:
        return 1.0 / (1.0 + std::exp(-x));
      case activation_kind::gelu: {
        const double pi = 3.14159265358979323846;
        return 0.5 * std::erfc(-x / std::sqrt(2.0)) +
               x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * pi);
      }
    }
    return std::nan("");  // not reached: every kind is listed (no default: -Wswitch checks)
  }

  /// True when \f$ \phi(0) = 0 \f$ (a zero channel stays zero through the activation).
  bool zero_at_zero() const { return value(0.0) == 0.0; }

  /// True for the kinds whose `param` matters: leaky ReLU's slope and ELU's alpha.
  bool has_param() const {
    switch (kind) {
      case activation_kind::leaky_relu:
      case activation_kind::elu:
        return true;
      case activation_kind::identity:
      case activation_kind::relu:
      case activation_kind::tanh:
      case activation_kind::sigmoid:
      case activation_kind::softplus:
      case activation_kind::gelu:
        return false;
    }
    return false;  // not reached: every kind is listed (no default: -Wswitch checks)
  }
};

/// The parametric activation \f$ P\phi_a = (1 - a)\phi + a x \f$ (PReLU when phi is ReLU).
/// Construct it with `make_p_activation`, which checks `a`.
struct p_activation_fn {
  activation_fn phi;
  double a = 1.0;

  /// \f$ (1-a)\phi(x) + a x \f$.
  double value(double x) const { return (1.0 - a) * phi.value(x) + a * x; }
  /// \f$ \partial/\partial x = (1-a)\phi'(x) + a \f$.
  double dx(double x) const { return (1.0 - a) * phi.derivative(x) + a; }
  /// \f$ \partial/\partial a = x - \phi(x) \f$.
  double da(double x) const { return x - phi.value(x); }
};

/// A P-activation with a checked `a`.
/// \throws value_error unless `a` is in [0, 1].
inline p_activation_fn make_p_activation(activation_fn phi, double a = 1.0) {
  detail::require<value_error>(a >= 0.0 && a <= 1.0, "make_p_activation: a must be in [0, 1], got ",
                               a, " (for ", to_string(phi.kind), ")");
  return p_activation_fn{phi, a};
}

/// Elementwise application of anything with a `value(double)` member.
template <typename Scalar, typename Act>
tensor<Scalar> apply(const Act& act, tensor<Scalar> x) {
  for (Scalar& v : x)
    v = static_cast<Scalar>(act.value(double(v)));
  return x;
}

}  // namespace netmorph

#endif  // NETMORPH_ACTIVATIONS_HPP

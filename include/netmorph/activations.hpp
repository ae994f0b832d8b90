#ifndef NETMORPH_ACTIVATIONS_HPP
#define NETMORPH_ACTIVATIONS_HPP

/// \file activations.hpp
/// Activations `phi` and the parametric activations of the paper (§3.3, docs/DESIGN.md §5):
/// \f$ P\phi_a(x) = (1 - a)\,\phi(x) + a\,x \f$, `a` in [0, 1]. At `a = 1` a P-activation is the
/// identity, which is what makes a depth morph exact after any continuous activation.
///
/// The kinds are declared once: the enum, `activation_kinds` (every kind, in declaration order,
/// checked at compile time) and three switches below (`detail::activation_traits_of`: name,
/// parameter, default; `value`; `derivative`), none with a `default:`, so that -Wswitch names a
/// kind a switch forgets. Everything else (the file reader, the command line, the tests) walks
/// `activation_kinds` and parses names with `activation_kind_from_string`.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

#include <array>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace netmorph {

/// The elementwise non-linearities netmorph knows. Each one's name (`to_string`, the name in
/// files and on the command line) is its enumerator, which is PyTorch's functional name.
enum class activation_kind {
  identity,
  relu,
  leaky_relu,
  tanh,
  sigmoid,
  elu,
  softplus,
  gelu,
  relu6,
  hardswish,
  hardsigmoid,
  silu
};

/// Every activation kind, in declaration order (a static_assert below checks it is complete).
inline constexpr std::array activation_kinds{
    activation_kind::identity,  activation_kind::relu,        activation_kind::leaky_relu,
    activation_kind::tanh,      activation_kind::sigmoid,     activation_kind::elu,
    activation_kind::softplus,  activation_kind::gelu,        activation_kind::relu6,
    activation_kind::hardswish, activation_kind::hardsigmoid, activation_kind::silu};

namespace detail {

/// What `activations.hpp` knows of a kind besides its function: its name (in files and on the
/// command line), whether its parameter matters, and the parameter it has when none is given.
struct activation_traits {
  const char* name;
  bool has_param;
  double default_param;
};

/// The traits of `k`; a null name for a value that is no enumerator. Defaults are PyTorch's:
/// `nn.LeakyReLU`'s negative slope 0.01, `nn.ELU`'s alpha 1.
constexpr activation_traits activation_traits_of(activation_kind k) {
  switch (k) {
    case activation_kind::identity:
      return {"identity", false, 0.0};
    case activation_kind::relu:
      return {"relu", false, 0.0};
    case activation_kind::leaky_relu:
      return {"leaky_relu", true, 0.01};
    case activation_kind::tanh:
      return {"tanh", false, 0.0};
    case activation_kind::sigmoid:
      return {"sigmoid", false, 0.0};
    case activation_kind::elu:
      return {"elu", true, 1.0};
    case activation_kind::softplus:
      return {"softplus", false, 0.0};
    case activation_kind::gelu:
      return {"gelu", false, 0.0};
    case activation_kind::relu6:
      return {"relu6", false, 0.0};
    case activation_kind::hardswish:
      return {"hardswish", false, 0.0};
    case activation_kind::hardsigmoid:
      return {"hardsigmoid", false, 0.0};
    case activation_kind::silu:
      return {"silu", false, 0.0};
  }
  return {nullptr, false, 0.0};  // not an enumerator (no default: -Wswitch names a forgotten kind)
}

/// True when `activation_kinds` holds every enumerator in declaration order: entry i is the
/// enumerator of value i, and the value after the last one has no name, so no enumerator
/// (with its case in `activation_traits_of`, which -Wswitch demands) is missing from the array.
constexpr bool activation_kinds_complete() {
  for (std::size_t i = 0; i < activation_kinds.size(); ++i)
    if (activation_kinds[i] != static_cast<activation_kind>(i)) return false;
  return activation_traits_of(static_cast<activation_kind>(activation_kinds.size())).name ==
         nullptr;
}

/// The logistic function \f$ 1 / (1 + e^{-x}) \f$; 0 or 1 (never NaN) where `exp` overflows.
inline double logistic(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

/// \f$ \min(\max(x, 0), 6) \f$ (a NaN stays NaN).
constexpr double relu6(double x) {
  return x < 0.0 ? 0.0 : x > 6.0 ? 6.0 : x;
}

}  // namespace detail

static_assert(detail::activation_kinds_complete(),
              "netmorph::activation_kinds must list every activation_kind in declaration order");

/// The name of `k` ("relu", "leaky_relu", ...), as written in files and on the command line.
constexpr const char* to_string(activation_kind k) {
  const char* name = detail::activation_traits_of(k).name;
  return name ? name : "unknown";
}

/// The kind named `name` (exactly, as `to_string` spells it); nullopt for any other string.
inline std::optional<activation_kind> activation_kind_from_string(std::string_view name) {
  for (activation_kind k : activation_kinds)
    if (name == to_string(k)) return k;
  return std::nullopt;
}

/// Every kind's name in `activation_kinds` order, joined by `separator`: the list error
/// messages and help texts show ("identity, relu, leaky_relu, ...").
inline std::string activation_kind_names(std::string_view separator = ", ") {
  std::string s;
  for (activation_kind k : activation_kinds) {
    if (!s.empty()) s += separator;
    s += to_string(k);
  }
  return s;
}

/// True for the kinds whose parameter matters: leaky ReLU's negative slope and ELU's alpha.
constexpr bool has_param(activation_kind k) {
  return detail::activation_traits_of(k).has_param;
}

/// The parameter `k` has when none is given: PyTorch's defaults, 0.01 for leaky ReLU's
/// negative slope (`nn.LeakyReLU`) and 1 for ELU's alpha (`nn.ELU`); 0 for a kind without one.
constexpr double default_param(activation_kind k) {
  return detail::activation_traits_of(k).default_param;
}

/// An activation `phi` with its parameter (the negative slope of leaky ReLU, the alpha of ELU).
/// `activation_fn{kind}` takes `default_param(kind)`; `activation_fn{kind, param}` sets it.
struct activation_fn {
  activation_kind kind = activation_kind::relu;
  double param = default_param(activation_kind::relu);

  constexpr activation_fn() = default;
  /// `k` with its default parameter (PyTorch's).
  /// (Implicit, so that `{kind}` initialises one as it did when this was an aggregate.)
  constexpr activation_fn(activation_kind k) : kind(k), param(default_param(k)) {}
  /// `k` with parameter `p` (ignored by the kinds without one).
  constexpr activation_fn(activation_kind k, double p) : kind(k), param(p) {}

  /// \f$ \phi(x) \f$. The formulas of relu6, hardswish, hardsigmoid and silu are PyTorch's
  /// (`nn.ReLU6`, `nn.Hardswish`, `nn.Hardsigmoid`, `nn.SiLU`), evaluated in the same order.
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
        return detail::logistic(x);
      case activation_kind::elu:
        return x > 0 ? x : param * std::expm1(x);
      case activation_kind::softplus:
        return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
      case activation_kind::gelu:
        return 0.5 * x * std::erfc(-x / std::sqrt(2.0));  // exact (erf) GELU
      case activation_kind::relu6:
        return detail::relu6(x);
      case activation_kind::hardswish:
        return x * detail::relu6(x + 3.0) / 6.0;
      case activation_kind::hardsigmoid:
        return detail::relu6(x + 3.0) / 6.0;
      case activation_kind::silu:
        return x / (1.0 + std::exp(-x));  // x sigma(x): -0 for x << 0, x for x >> 0, no NaN
    }
    return std::nan("");  // not reached: every kind is listed (no default: -Wswitch checks)
  }

  /// \f$ \phi'(x) \f$. At a kink, the value PyTorch's autograd gives (checked against torch
  /// 1.13): relu 0 at 0, leaky_relu `param` and elu `param` at 0 (the left derivatives); relu6 0
  /// at 0 and 6 and hardsigmoid 0 at -3 and 3 (the flat side's); hardswish -1/2 at -3 and 1 at 3
  /// (the right derivatives; at exactly 3 PyTorch's vectorised kernel gives 1 and its scalar
  /// kernel, used for a tensor's tail elements, 3/2).
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
        const double s = detail::logistic(x);
        return s * (1.0 - s);
      }
      case activation_kind::elu:
        return x > 0 ? 1.0 : param * std::exp(x);
      case activation_kind::softplus:
        return detail::logistic(x);
      case activation_kind::gelu: {
        const double pi = 3.14159265358979323846;
        return 0.5 * std::erfc(-x / std::sqrt(2.0)) +
               x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * pi);
      }
      case activation_kind::relu6:
        return x > 0 && x < 6.0 ? 1.0 : 0.0;
      case activation_kind::hardswish:
        return x < -3.0 ? 0.0 : x < 3.0 ? x / 3.0 + 0.5 : 1.0;
      case activation_kind::hardsigmoid:
        return x > -3.0 && x < 3.0 ? 1.0 / 6.0 : 0.0;
      case activation_kind::silu: {
        // sigma(x) (1 + x sigma(-x)), with sigma(-x) = 1 - sigma(x) computed directly so that
        // it keeps its digits for large x; no NaN for any finite x.
        const double s = detail::logistic(x);
        return s * (1.0 + x * detail::logistic(-x));
      }
    }
    return std::nan("");  // not reached: every kind is listed (no default: -Wswitch checks)
  }

  /// True when \f$ \phi(0) = 0 \f$ (a zero channel stays zero through the activation).
  bool zero_at_zero() const { return value(0.0) == 0.0; }

  /// True for the kinds whose `param` matters: leaky ReLU's slope and ELU's alpha.
  constexpr bool has_param() const { return netmorph::has_param(kind); }
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

#ifndef NETMORPH_NN_LAYERS_HPP
#define NETMORPH_NN_LAYERS_HPP

/// \file layers.hpp
/// Every layer of the network model (one per file under `nn/layers/`) and `visit`, the one
/// dispatch on layer kinds: `visit(l, f)` calls `f` with `l` as its concrete layer class.

#include <netmorph/detail/message.hpp>
#include <netmorph/nn/layers/activation.hpp>
#include <netmorph/nn/layers/adaptive_pool2d.hpp>
#include <netmorph/nn/layers/batch_norm.hpp>
#include <netmorph/nn/layers/conv2d.hpp>
#include <netmorph/nn/layers/dense.hpp>
#include <netmorph/nn/layers/dropout.hpp>
#include <netmorph/nn/layers/flatten.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/nn/layers/p_activation.hpp>
#include <netmorph/nn/layers/parallel.hpp>
#include <netmorph/nn/layers/pool2d.hpp>

#include <type_traits>
#include <utility>

namespace netmorph {
namespace nn {

namespace detail {
template <typename Layer, typename Base, typename F>
decltype(auto) visit_as(Base& l, F&& f) {
  using target = std::conditional_t<std::is_const<Base>::value, const Layer, Layer>;
  return std::forward<F>(f)(static_cast<target&>(l));
}
}  // namespace detail

/// Calls `f(concrete)` where `concrete` is `l` as its layer class (`conv2d<Scalar>&`, ...,
/// `parallel<Scalar>&`, const when `l` is), chosen by `l.kind()`; every call of `f` must return
/// the same type. `Base` is `layer<Scalar>` or `const layer<Scalar>`.
template <
    typename Base, typename F,
    typename = std::enable_if_t<std::is_base_of<
        layer<typename std::remove_const_t<Base>::scalar_type>, std::remove_const_t<Base>>::value>>
decltype(auto) visit(Base& l, F&& f) {
  using Scalar = typename std::remove_const_t<Base>::scalar_type;
  switch (l.kind()) {
    case layer_kind::conv2d:
      return detail::visit_as<conv2d<Scalar>>(l, std::forward<F>(f));
    case layer_kind::dense:
      return detail::visit_as<dense<Scalar>>(l, std::forward<F>(f));
    case layer_kind::pool2d:
      return detail::visit_as<pool2d<Scalar>>(l, std::forward<F>(f));
    case layer_kind::adaptive_pool2d:
      return detail::visit_as<adaptive_pool2d<Scalar>>(l, std::forward<F>(f));
    case layer_kind::flatten:
      return detail::visit_as<flatten<Scalar>>(l, std::forward<F>(f));
    case layer_kind::batch_norm:
      return detail::visit_as<batch_norm<Scalar>>(l, std::forward<F>(f));
    case layer_kind::dropout:
      return detail::visit_as<dropout<Scalar>>(l, std::forward<F>(f));
    case layer_kind::activation:
      return detail::visit_as<activation<Scalar>>(l, std::forward<F>(f));
    case layer_kind::p_activation:
      return detail::visit_as<p_activation<Scalar>>(l, std::forward<F>(f));
    case layer_kind::parallel:
      break;
  }
  NETMORPH_ASSERT(l.kind() == layer_kind::parallel);
  return detail::visit_as<parallel<Scalar>>(l, std::forward<F>(f));
}

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_HPP

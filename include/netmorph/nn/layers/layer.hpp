#ifndef NETMORPH_NN_LAYERS_LAYER_HPP
#define NETMORPH_NN_LAYERS_LAYER_HPP

/// \file layer.hpp
/// The base of every layer of a model (docs/DESIGN.md §8.1): the kinds of layer, a trainable
/// parameter, the layer interface, and the dispatch on kinds (`layer_cast`) that the model
/// morphs, the notation printer and the file formats use instead of `dynamic_cast`.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace netmorph {
namespace nn {

/// Every kind of layer a model can hold; `layer::kind()` returns one, `to_string` names it (the
/// names are those of the model files, docs/DESIGN.md §9).
enum class layer_kind {
  conv2d,
  dense,
  pool2d,
  adaptive_pool2d,
  flatten,
  batch_norm,
  dropout,
  activation,
  p_activation,
  parallel
};

/// The name of a layer kind: "conv2d", "dense", "pool2d", "adaptive_pool2d", "flatten",
/// "batch_norm", "dropout", "activation", "p_activation", "parallel".
inline const char* to_string(layer_kind k) {
  switch (k) {
    case layer_kind::conv2d:
      return "conv2d";
    case layer_kind::dense:
      return "dense";
    case layer_kind::pool2d:
      return "pool2d";
    case layer_kind::adaptive_pool2d:
      return "adaptive_pool2d";
    case layer_kind::flatten:
      return "flatten";
    case layer_kind::batch_norm:
      return "batch_norm";
    case layer_kind::dropout:
      return "dropout";
    case layer_kind::activation:
      return "activation";
    case layer_kind::p_activation:
      return "p_activation";
    case layer_kind::parallel:
      return "parallel";
  }
  return "unknown";  // not reached: every kind is listed above
}

/// A trainable tensor with its gradient and its optimizer state, which lives here so that every
/// morph carries it with the parameter (docs/DESIGN.md §8.4): SGD's velocity (momentum buffer)
/// and Adam's moment estimates and step count (PyTorch's `exp_avg`, `exp_avg_sq` and `step`).
/// Adam's tensors stay empty, meaning zero, until the parameter's first Adam step.
template <typename Scalar>
struct parameter {
  std::string name;
  tensor<Scalar> value, grad, velocity;
  tensor<Scalar> exp_avg, exp_avg_sq;
  std::int64_t step = 0;  ///< Adam steps this parameter has taken (its bias correction)

  parameter() = default;
  parameter(std::string n, tensor<Scalar> v)
      : name(std::move(n)), value(std::move(v)), grad(value.shape()), velocity(value.shape()) {}

  /// Whether the parameter holds Adam state.
  bool has_adam_state() const { return !exp_avg.empty() || step != 0; }
};

/// The power of the gradient an optimizer state tensor accumulates: 1 for SGD's velocity and
/// Adam's first moment, 2 for Adam's second moment. A morph that scales a parameter's gradient
/// by `s` scales its state by `s` to this power (docs/DESIGN.md §8.4).
enum class state_order { first = 1, second = 2 };

/// Gives `to` the optimizer state of `from` with each state tensor passed through
/// `f(const tensor<Scalar>&, state_order)`, and the same step count; Adam's tensors only when
/// `from` has them (empty stays empty).
template <typename Scalar, typename F>
void carry_state(const parameter<Scalar>& from, parameter<Scalar>& to, F&& f) {
  to.velocity = f(from.velocity, state_order::first);
  if (from.exp_avg.empty()) {
    to.exp_avg = tensor<Scalar>();
    to.exp_avg_sq = tensor<Scalar>();
  } else {
    to.exp_avg = f(from.exp_avg, state_order::first);
    to.exp_avg_sq = f(from.exp_avg_sq, state_order::second);
  }
  to.step = from.step;
}

/// Base class of every layer.
///
/// Layers implement `forward_into` and `backward_into`, which write into caller-owned buffers
/// (a model keeps one per layer, so a training loop with stable shapes allocates nothing);
/// `forward` and `backward` are the allocating conveniences over them. A training-mode forward
/// pass caches what the backward pass needs; `backward_into` takes dL/d(output), accumulates
/// dL/d(parameters) into their `grad`, and writes dL/d(input).
template <typename Scalar>
class layer {
 public:
  using scalar_type = Scalar;
  virtual ~layer() = default;

  /// The layer's kind, for dispatch (`layer_cast`) and file formats.
  virtual layer_kind kind() const = 0;
  /// A one-line description with the hyper-parameters, e.g. "conv2d 16->32 3x3 stride 1 pad 1".
  virtual std::string describe() const = 0;
  /// Per-sample output shape for a per-sample input shape (no batch axis).
  /// \throws shape_error when the layer does not accept the input shape.
  virtual shape_type output_shape(const shape_type& in) const = 0;
  /// Forward pass into a caller-owned `y` whose storage is reused when its shape already
  /// matches. In training mode the layer may keep a reference to `x` instead of a copy: the
  /// caller keeps `x` alive and unchanged until the matching `backward_into`, and `x` and `y`
  /// must be distinct objects.
  virtual void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) = 0;
  /// Backward pass into a caller-owned `dx` (storage reused as in `forward_into`; `dy` and `dx`
  /// distinct). \throws error when no training-mode forward pass preceded it.
  virtual void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) = 0;
  virtual std::vector<parameter<Scalar>*> parameters() { return {}; }
  virtual std::unique_ptr<layer> clone() const = 0;
  /// Called after every optimizer step (P-activations clamp `a` to [0, 1]).
  virtual void after_step() {}
  /// Layers that draw random numbers (dropout) use the model's generator.
  virtual void set_rng(std::mt19937_64*) {}

  /// `forward_into` a new tensor. In training mode the layer keeps its own copy of `x`, so the
  /// caller need not keep it alive.
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) {
    tensor<Scalar> y;
    if (training) {
      kept_input_ = x;
      forward_into(kept_input_, y, true);
    } else {
      forward_into(x, y, false);
    }
    return y;
  }
  /// `backward_into` a new tensor.
  tensor<Scalar> backward(const tensor<Scalar>& dy) {
    tensor<Scalar> dx;
    backward_into(dy, dx);
    return dx;
  }

  /// Whether `backward` must return dL/d(input). A model clears it for its first layer, whose
  /// input is data: conv2d and dense then skip that product and return an empty tensor.
  void set_input_grad(bool needed) { input_grad_ = needed; }
  bool input_grad() const { return input_grad_; }

  /// The layer's name in its model (state_dict style, e.g. "3" or "2.path0.1"); empty outside a
  /// model. The model assigns it (`model::add`) and the morphs keep it predictable. `set_name`
  /// is for layers not yet in a model (a parallel block's inner layers before `model::add`): a
  /// model indexes its names, and renaming a layer it holds is not supported.
  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }

 private:
  bool input_grad_ = true;
  std::string name_;
  tensor<Scalar> kept_input_;  // the input of the last training-mode `forward`
};

/// An owned sequence of layers.
template <typename Scalar>
using layer_list = std::vector<std::unique_ptr<layer<Scalar>>>;

/// `l` as the layer class `Layer<Scalar>` when it is of that kind, else null (a check of `kind()`
/// and a static cast; no RTTI).
template <template <typename> class Layer, typename Scalar>
Layer<Scalar>* layer_cast(layer<Scalar>* l) {
  return l && l->kind() == Layer<Scalar>::static_kind ? static_cast<Layer<Scalar>*>(l) : nullptr;
}
template <template <typename> class Layer, typename Scalar>
const Layer<Scalar>* layer_cast(const layer<Scalar>* l) {
  return l && l->kind() == Layer<Scalar>::static_kind ? static_cast<const Layer<Scalar>*>(l)
                                                      : nullptr;
}

namespace detail {

template <typename Scalar>
layer_list<Scalar> clone_all(const layer_list<Scalar>& l) {
  layer_list<Scalar> out;
  for (const auto& p : l)
    out.push_back(p->clone());
  return out;
}

/// What a layer remembers of its input for the backward pass: either a reference to a tensor its
/// caller keeps alive (`refer`) or its own copy (`keep`). A copied layer always owns a copy, so it
/// never points into another model.
template <typename Scalar>
class input_ref {
 public:
  input_ref() = default;
  input_ref(const input_ref& o) { *this = o; }
  input_ref& operator=(const input_ref& o) {
    if (this != &o) {
      own_ = o.ptr_ ? *o.ptr_ : tensor<Scalar>();
      ptr_ = o.ptr_ ? &own_ : nullptr;
    }
    return *this;
  }
  void refer(const tensor<Scalar>& x) { ptr_ = &x; }
  /// The remembered input, or null before any training-mode forward pass.
  const tensor<Scalar>* get() const { return ptr_; }

 private:
  tensor<Scalar> own_;
  const tensor<Scalar>* ptr_ = nullptr;
};

inline void require_rank(const shape_type& s, std::size_t rank, const char* who) {
  netmorph::detail::require<shape_error>(s.size() == rank, who, ": expected a rank-", rank,
                                         " input, got shape ", netmorph::detail::shape_string(s));
}

/// The cached input of `who`'s backward pass. \throws error before a training-mode forward.
template <typename Scalar>
const tensor<Scalar>& cached_input(const input_ref<Scalar>& x, const char* who) {
  netmorph::detail::require<error>(x.get() != nullptr, who,
                                   "::backward: no cached input (call forward with training = "
                                   "true)");
  return *x.get();
}

/// Throws shape_error naming `who` unless the gradient `dy` has the output's shape `want`.
inline void require_gradient_shape(const shape_type& dy, const shape_type& want, const char* who,
                                   const char* of = "output") {
  netmorph::detail::require<shape_error>(dy == want, who, "::backward: gradient has shape ",
                                         netmorph::detail::shape_string(dy), ", the ", of, " has ",
                                         netmorph::detail::shape_string(want));
}

}  // namespace detail
}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_LAYER_HPP

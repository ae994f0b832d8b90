#ifndef NETMORPH_NN_LAYERS_PARALLEL_HPP
#define NETMORPH_NN_LAYERS_PARALLEL_HPP

/// \file parallel.hpp
/// `nn::parallel`: paths from one input whose outputs are summed, and the forward and backward
/// passes of a layer sequence that it shares with `nn::model`.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers/layer.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace netmorph {
namespace nn {
namespace detail {

/// Training-mode buffers of a layer sequence: `acts[i]` holds the output of layer `i` (which layer
/// `i + 1` may refer to until the backward pass) and `grads[i]` dL/d(input of layer `i`). Scratch,
/// not state: a copy starts empty (copied layers own copies of their cached inputs).
template <typename Scalar>
struct sequence_buffers {
  std::vector<tensor<Scalar>> acts, grads;

  sequence_buffers() = default;
  sequence_buffers(const sequence_buffers&) {}
  sequence_buffers& operator=(const sequence_buffers&) { return *this; }
  sequence_buffers(sequence_buffers&&) noexcept = default;
  sequence_buffers& operator=(sequence_buffers&&) noexcept = default;
};

/// Training-mode forward pass of `layers` on `x` into `buf.acts`; `x` must stay alive until the
/// backward pass (the first layer may refer to it). Returns the output (`x` for no layers).
template <typename Scalar>
const tensor<Scalar>& forward_sequence(layer_list<Scalar>& layers, const tensor<Scalar>& x,
                                       sequence_buffers<Scalar>& buf) {
  if (layers.empty()) return x;
  if (buf.acts.size() != layers.size()) buf.acts.resize(layers.size());
  const tensor<Scalar>* h = &x;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    layers[i]->forward_into(*h, buf.acts[i], true);
    h = &buf.acts[i];
  }
  return *h;
}

/// Inference-mode forward pass through two buffers in turn; the training buffers, and what the
/// layers remember for their backward pass, stay untouched.
template <typename Scalar>
tensor<Scalar> infer_sequence(layer_list<Scalar>& layers, const tensor<Scalar>& x) {
  if (layers.empty()) return x;
  tensor<Scalar> a, b;
  const tensor<Scalar>* h = &x;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    tensor<Scalar>& out = i % 2 == 0 ? a : b;
    layers[i]->forward_into(*h, out, false);
    h = &out;
  }
  return layers.size() % 2 == 1 ? std::move(a) : std::move(b);
}

/// Backward pass of `layers` from dL/d(output) into `buf.grads`. Returns dL/d(input) (`dy` for
/// no layers).
template <typename Scalar>
const tensor<Scalar>& backward_sequence(layer_list<Scalar>& layers, const tensor<Scalar>& dy,
                                        sequence_buffers<Scalar>& buf) {
  if (layers.empty()) return dy;
  if (buf.grads.size() != layers.size()) buf.grads.resize(layers.size());
  const tensor<Scalar>* g = &dy;
  for (std::size_t i = layers.size(); i-- > 0;) {
    layers[i]->backward_into(*g, buf.grads[i]);
    g = &buf.grads[i];
  }
  return *g;
}

/// Per-sample output shape of a layer sequence.
template <typename Scalar>
shape_type sequence_shape(const layer_list<Scalar>& layers, shape_type s) {
  for (const auto& l : layers)
    s = l->output_shape(s);
  return s;
}

}  // namespace detail

/// Parallel paths from one input whose outputs are summed: stacked subnets (paper §3.5) and
/// residual blocks, where an empty path is the identity shortcut.
template <typename Scalar>
class parallel : public layer<Scalar> {
 public:
  parallel() = default;
  explicit parallel(std::vector<layer_list<Scalar>> paths) : paths_(std::move(paths)) {}
  /// A deep copy. A copy taken between forward and backward back-propagates like the original:
  /// its layers own copies of what they cached.
  parallel(const parallel& o) : layer<Scalar>(o), buffers_(o.paths_.size()), trained_(o.trained_) {
    for (const auto& p : o.paths_)
      paths_.push_back(detail::clone_all(p));
  }
  parallel& operator=(const parallel& o) {
    if (this != &o) *this = parallel(o);
    return *this;
  }
  parallel(parallel&&) noexcept = default;
  parallel& operator=(parallel&&) noexcept = default;

  static constexpr layer_kind static_kind = layer_kind::parallel;
  layer_kind kind() const override { return static_kind; }
  std::string describe() const override {
    std::string out = netmorph::detail::cat("parallel ", paths_.size(), " paths (");
    for (std::size_t i = 0; i < paths_.size(); ++i)
      out += netmorph::detail::cat(i ? ", " : "", paths_[i].size(), " layers");
    return out + ")";
  }
  std::vector<layer_list<Scalar>>& paths() { return paths_; }
  const std::vector<layer_list<Scalar>>& paths() const { return paths_; }

  shape_type output_shape(const shape_type& in) const override {
    netmorph::detail::require<shape_error>(!paths_.empty(), "nn::parallel: no paths");
    shape_type first;
    for (std::size_t i = 0; i < paths_.size(); ++i) {
      const shape_type s = detail::sequence_shape(paths_[i], in);
      if (i == 0) first = s;
      netmorph::detail::require<shape_error>(s == first, "nn::parallel: path ", i, " gives shape ",
                                             netmorph::detail::shape_string(s), ", path 0 gives ",
                                             netmorph::detail::shape_string(first));
    }
    return first;
  }

  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    netmorph::detail::require<shape_error>(!paths_.empty(), "nn::parallel: no paths");
    if (training) {
      if (buffers_.size() != paths_.size()) buffers_.resize(paths_.size());
      trained_ = true;
    }
    for (std::size_t i = 0; i < paths_.size(); ++i) {
      tensor<Scalar> inferred;
      const tensor<Scalar>& h = training ? detail::forward_sequence(paths_[i], x, buffers_[i])
                                         : (inferred = detail::infer_sequence(paths_[i], x));
      if (i == 0) {
        netmorph::detail::ensure_shape(y, h.shape());
        std::copy(h.begin(), h.end(), y.begin());
        continue;
      }
      netmorph::detail::require<shape_error>(
          h.shape() == y.shape(), "nn::parallel: path ", i, " gives shape ",
          netmorph::detail::shape_string(h.shape()), ", path 0 gives ",
          netmorph::detail::shape_string(y.shape()));
      y.vector() += h.vector();
    }
  }

  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    netmorph::detail::require<error>(
        trained_ && buffers_.size() == paths_.size() && !paths_.empty(),
        "nn::parallel::backward: no cached input (call forward with training = true)");
    for (std::size_t i = 0; i < paths_.size(); ++i) {
      const tensor<Scalar>& g = detail::backward_sequence(paths_[i], dy, buffers_[i]);
      if (i == 0) {
        netmorph::detail::ensure_shape(dx, g.shape());
        std::copy(g.begin(), g.end(), dx.begin());
      } else {
        dx.vector() += g.vector();
      }
    }
  }

  std::vector<parameter<Scalar>*> parameters() override {
    std::vector<parameter<Scalar>*> out;
    for (auto& p : paths_)
      for (auto& l : p)
        for (auto* q : l->parameters())
          out.push_back(q);
    return out;
  }
  void after_step() override {
    for (auto& p : paths_)
      for (auto& l : p)
        l->after_step();
  }
  void set_rng(std::mt19937_64* rng) override {
    for (auto& p : paths_)
      for (auto& l : p)
        l->set_rng(rng);
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    return std::make_unique<parallel>(*this);
  }

 private:
  std::vector<layer_list<Scalar>> paths_;
  std::vector<detail::sequence_buffers<Scalar>> buffers_;  // one per path, training mode
  bool trained_ = false;                                   // a training-mode forward pass preceded
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_PARALLEL_HPP

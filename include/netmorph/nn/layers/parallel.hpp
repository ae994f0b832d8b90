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

/// How a parallel block joins its paths' outputs (docs/DESIGN.md §8.1).
enum class merge_kind {
  add,     ///< summed: residual blocks, stacked subnets (an empty path is the identity shortcut)
  concat,  ///< concatenated along the channel axis (the first per-sample axis), in path order
  mul  ///< multiplied elementwise, a path's size-1 axes broadcast: a squeeze-and-excitation gate
};

/// "add", "concat" or "mul" (the names in files).
inline const char* to_string(merge_kind k) {
  switch (k) {
    case merge_kind::add:
      return "add";
    case merge_kind::concat:
      return "concat";
    case merge_kind::mul:
      return "mul";
  }
  return "unknown";  // not reached: every kind is listed, and -Wswitch names a forgotten one
}

/// The merge kind named `s`. \throws value_error naming `who` and the known names otherwise.
inline merge_kind merge_kind_from_string(const std::string& s, const char* who) {
  for (merge_kind k : {merge_kind::add, merge_kind::concat, merge_kind::mul})
    if (s == to_string(k)) return k;
  throw value_error(netmorph::detail::cat(who, ": unknown merge '", s, "' (add, concat, mul)"));
}

namespace detail {

/// Calls `f(i, j)` for every flat index `i` of a row-major tensor of shape `full` with the flat
/// index `j` of the same element in a tensor of shape `small` broadcast to it (equal rank; each
/// axis of `small` equals `full`'s or is 1).
template <typename F>
void for_each_broadcast(const shape_type& full, const shape_type& small, F&& f) {
  const std::size_t r = full.size();
  shape_type stride(r, 0), at(r, 0);
  index_type step = 1;
  for (std::size_t a = r; a-- > 0;) {
    stride[a] = small[a] == 1 ? 0 : step;
    step *= small[a];
  }
  index_type total = 1;
  for (index_type d : full)
    total *= d;
  index_type j = 0;
  for (index_type i = 0; i < total; ++i) {
    f(i, j);
    for (std::size_t a = r; a-- > 0;) {  // the next multi-index, row-major
      j += stride[a];
      if (++at[a] < full[a]) break;
      j -= stride[a] * full[a];
      at[a] = 0;
    }
  }
}

}  // namespace detail

/// Parallel paths from one input whose outputs are merged (`merge_kind`): summed (stacked
/// subnets, paper §3.5, and residual blocks, where an empty path is the identity shortcut),
/// concatenated along the channels (Inception, DenseNet) or multiplied with broadcasting
/// (squeeze-and-excitation).
template <typename Scalar>
class parallel : public layer<Scalar> {
 public:
  parallel() = default;
  explicit parallel(std::vector<layer_list<Scalar>> paths, merge_kind merge = merge_kind::add)
      : paths_(std::move(paths)), merge_(merge) {}
  /// A deep copy. A copy taken between forward and backward back-propagates like the original:
  /// its layers own copies of what they cached.
  parallel(const parallel& o)
      : layer<Scalar>(o),
        merge_(o.merge_),
        buffers_(o.paths_.size()),
        kept_(o.kept_),
        parts_(o.parts_),
        out_shape_(o.out_shape_),
        trained_(o.trained_) {
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
    out += ")";
    return merge_ == merge_kind::add ? out : out + " " + to_string(merge_);
  }
  std::vector<layer_list<Scalar>>& paths() { return paths_; }
  const std::vector<layer_list<Scalar>>& paths() const { return paths_; }
  merge_kind merge() const { return merge_; }

  shape_type output_shape(const shape_type& in) const override {
    std::vector<shape_type> shapes;
    for (const auto& p : paths_)
      shapes.push_back(detail::sequence_shape(p, in));
    return merged_shape(shapes);
  }

  void forward_into(const tensor<Scalar>& x, tensor<Scalar>& y, bool training) override {
    netmorph::detail::require<shape_error>(!paths_.empty(), "nn::parallel: no paths");
    if (training) {
      if (buffers_.size() != paths_.size()) buffers_.resize(paths_.size());
      trained_ = true;
    }
    const std::size_t n = paths_.size();
    std::vector<tensor<Scalar>> inferred(training ? 0 : n);
    std::vector<const tensor<Scalar>*> h(n);
    std::vector<shape_type> shapes(n);
    for (std::size_t i = 0; i < n; ++i) {
      h[i] = training ? &detail::forward_sequence(paths_[i], x, buffers_[i])
                      : &(inferred[i] = detail::infer_sequence(paths_[i], x));
      shapes[i] = h[i]->shape();
      shapes[i].erase(shapes[i].begin());  // per sample
    }
    shape_type out = merged_shape(shapes);
    for (std::size_t i = 1; i < n; ++i)
      netmorph::detail::require<shape_error>(h[i]->dim(0) == h[0]->dim(0), "nn::parallel: path ", i,
                                             " gives ", h[i]->dim(0), " samples, path 0 ",
                                             h[0]->dim(0));
    out.insert(out.begin(), h[0]->dim(0));
    netmorph::detail::ensure_shape(y, out);
    if (training) out_shape_ = out;
    switch (merge_) {
      case merge_kind::add:
        std::copy(h[0]->begin(), h[0]->end(), y.begin());
        for (std::size_t i = 1; i < n; ++i)
          y.vector() += h[i]->vector();
        break;
      case merge_kind::concat: {
        if (training) {
          parts_.resize(n);
          for (std::size_t i = 0; i < n; ++i)
            parts_[i] = h[i]->shape();
        }
        const index_type samples = out[0], row = y.size() / std::max<index_type>(1, samples);
        index_type offset = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const index_type part = h[i]->size() / std::max<index_type>(1, samples);
          for (index_type s = 0; s < samples; ++s)
            std::copy(h[i]->data() + s * part, h[i]->data() + (s + 1) * part,
                      y.data() + s * row + offset);
          offset += part;
        }
        break;
      }
      case merge_kind::mul:
        std::fill(y.begin(), y.end(), Scalar(1));
        for (std::size_t i = 0; i < n; ++i) {
          const Scalar* hi = h[i]->data();
          Scalar* yo = y.data();
          detail::for_each_broadcast(out, h[i]->shape(),
                                     [&](index_type a, index_type b) { yo[a] *= hi[b]; });
        }
        if (training) {  // the backward pass multiplies by the other paths' outputs
          kept_.resize(n);
          for (std::size_t i = 0; i < n; ++i)
            kept_[i] = *h[i];
        }
        break;
    }
  }

  void backward_into(const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    netmorph::detail::require<error>(
        trained_ && buffers_.size() == paths_.size() && !paths_.empty(),
        "nn::parallel::backward: no cached input (call forward with training = true)");
    detail::require_gradient_shape(dy.shape(), out_shape_, "nn::parallel");
    const std::size_t n = paths_.size();
    if (merge_ != merge_kind::add && slices_.size() != n) slices_.resize(n);
    index_type offset = 0;  // concat: where path i's channels start in a sample of dy
    for (std::size_t i = 0; i < n; ++i) {
      const tensor<Scalar>* dyi = &dy;
      if (merge_ == merge_kind::concat) {
        netmorph::detail::require<error>(parts_.size() == n,
                                         "nn::parallel::backward: no cached path shapes");
        const shape_type& ps = parts_[i];
        const index_type samples = dy.dim(0), row = dy.size() / std::max<index_type>(1, samples);
        const index_type part = slice_size(ps) / std::max<index_type>(1, samples);
        netmorph::detail::ensure_shape(slices_[i], ps);
        for (index_type smp = 0; smp < samples; ++smp)
          std::copy(dy.data() + smp * row + offset, dy.data() + smp * row + offset + part,
                    slices_[i].data() + smp * part);
        offset += part;
        dyi = &slices_[i];
      } else if (merge_ == merge_kind::mul) {
        netmorph::detail::require<error>(kept_.size() == n,
                                         "nn::parallel::backward: no cached path outputs");
        // dL/dh_i = dy times the other paths' outputs, summed over the axes h_i broadcasts.
        tensor<Scalar> full(dy.shape());
        std::copy(dy.begin(), dy.end(), full.begin());
        for (std::size_t j = 0; j < n; ++j) {
          if (j == i) continue;
          const Scalar* hj = kept_[j].data();
          Scalar* f = full.data();
          detail::for_each_broadcast(dy.shape(), kept_[j].shape(),
                                     [&](index_type a, index_type b) { f[a] *= hj[b]; });
        }
        netmorph::detail::ensure_shape(slices_[i], kept_[i].shape());
        std::fill(slices_[i].begin(), slices_[i].end(), Scalar(0));
        Scalar* g = slices_[i].data();
        const Scalar* f = full.data();
        detail::for_each_broadcast(dy.shape(), kept_[i].shape(),
                                   [&](index_type a, index_type b) { g[b] += f[a]; });
        dyi = &slices_[i];
      }
      const tensor<Scalar>& g = detail::backward_sequence(paths_[i], *dyi, buffers_[i]);
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
  static index_type slice_size(const shape_type& s) {
    index_type n = 1;
    for (index_type d : s)
      n *= d;
    return n;
  }

  /// The per-sample shape of the merged output of paths giving per-sample `shapes`.
  shape_type merged_shape(const std::vector<shape_type>& shapes) const {
    using netmorph::detail::require;
    using netmorph::detail::shape_string;
    require<shape_error>(!shapes.empty(), "nn::parallel: no paths");
    shape_type out = shapes[0];
    for (std::size_t i = 1; i < shapes.size(); ++i) {
      const shape_type& s = shapes[i];
      switch (merge_) {
        case merge_kind::add:
          require<shape_error>(s == out, "nn::parallel: path ", i, " gives shape ", shape_string(s),
                               ", path 0 gives ", shape_string(shapes[0]));
          break;
        case merge_kind::concat:
          require<shape_error>(!s.empty() && s.size() == out.size() &&
                                   std::equal(s.begin() + 1, s.end(), out.begin() + 1),
                               "nn::parallel (concat): path ", i, " gives shape ", shape_string(s),
                               ", path 0 gives ", shape_string(shapes[0]),
                               "; all but the channel axis must agree");
          out[0] += s[0];
          break;
        case merge_kind::mul: {
          const shape_type so_far = out;
          bool ok = s.size() == out.size();
          for (std::size_t a = 0; ok && a < s.size(); ++a) {
            ok = s[a] == out[a] || s[a] == 1 || out[a] == 1;
            if (out[a] == 1) out[a] = s[a];  // 1 broadcasts to the other size (0 included)
          }
          require<shape_error>(ok, "nn::parallel (mul): path ", i, " gives shape ", shape_string(s),
                               ", which does not broadcast with ", shape_string(so_far),
                               " of the paths before it");
          break;
        }
      }
    }
    return out;
  }

  std::vector<layer_list<Scalar>> paths_;
  merge_kind merge_ = merge_kind::add;
  std::vector<detail::sequence_buffers<Scalar>> buffers_;  // one per path, training mode
  std::vector<tensor<Scalar>> kept_;    // mul: the paths' outputs of the last training forward
  std::vector<tensor<Scalar>> slices_;  // concat/mul: each path's share of dL/d(output)
  std::vector<shape_type> parts_;       // concat: the paths' output shapes, training mode
  shape_type out_shape_;                // the output shape of the last training forward
  bool trained_ = false;                // a training-mode forward pass preceded
};

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_LAYERS_PARALLEL_HPP

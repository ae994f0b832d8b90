#ifndef NETMORPH_NN_MODEL_HPP
#define NETMORPH_NN_MODEL_HPP

/// \file model.hpp
/// A sequential model with parallel blocks (paths summed), softmax cross-entropy, SGD with
/// momentum and weight decay, a learning-rate schedule, and training/evaluation loops.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace netmorph {
namespace nn {

/// An owned sequence of layers.
template <typename Scalar>
using layer_list = std::vector<std::unique_ptr<layer<Scalar>>>;

namespace detail {
template <typename Scalar>
layer_list<Scalar> clone_all(const layer_list<Scalar>& l) {
  layer_list<Scalar> out;
  for (const auto& p : l)
    out.push_back(p->clone());
  return out;
}
}  // namespace detail

/// Parallel paths from one input whose outputs are summed (stacked subnets, residual blocks:
/// an empty path is the identity shortcut).
template <typename Scalar>
class parallel : public layer<Scalar> {
 public:
  parallel() = default;
  explicit parallel(std::vector<layer_list<Scalar>> paths) : paths_(std::move(paths)) {}
  parallel(const parallel& o) {
    for (const auto& p : o.paths_)
      paths_.push_back(detail::clone_all(p));
  }
  std::string kind() const override { return "parallel"; }
  std::vector<layer_list<Scalar>>& paths() { return paths_; }
  const std::vector<layer_list<Scalar>>& paths() const { return paths_; }
  shape_type output_shape(const shape_type& in) const override {
    netmorph::detail::require<shape_error>(!paths_.empty(), "nn::parallel: no paths");
    shape_type first;
    for (std::size_t i = 0; i < paths_.size(); ++i) {
      shape_type s = in;
      for (const auto& l : paths_[i])
        s = l->output_shape(s);
      if (i == 0) first = s;
      netmorph::detail::require<shape_error>(s == first, "nn::parallel: path ", i, " gives shape ",
                                             netmorph::detail::shape_string(s), ", path 0 gives ",
                                             netmorph::detail::shape_string(first));
    }
    return first;
  }
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training) override {
    tensor<Scalar> sum;
    for (std::size_t i = 0; i < paths_.size(); ++i) {
      tensor<Scalar> h = x;
      for (auto& l : paths_[i])
        h = l->forward(h, training);
      if (i == 0) {
        sum = std::move(h);
      } else {
        netmorph::detail::require<shape_error>(h.shape() == sum.shape(), "nn::parallel: path ", i,
                                               " gives shape ",
                                               netmorph::detail::shape_string(h.shape()));
        sum.vector() += h.vector();
      }
    }
    return sum;
  }
  tensor<Scalar> backward(const tensor<Scalar>& dy) override {
    tensor<Scalar> dx;
    for (std::size_t i = 0; i < paths_.size(); ++i) {
      tensor<Scalar> g = dy;
      for (auto it = paths_[i].rbegin(); it != paths_[i].rend(); ++it)
        g = (*it)->backward(g);
      if (i == 0) {
        dx = std::move(g);
      } else {
        dx.vector() += g.vector();
      }
    }
    return dx;
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
};

/// A sequential model on per-sample inputs of `input_shape` (e.g. `{1, 28, 28}` or `{784}`).
/// Copying a model deep-copies its layers (parameters, gradients and velocities).
template <typename Scalar>
class model {
 public:
  explicit model(shape_type input_shape, std::uint64_t seed = 0)
      : input_shape_(std::move(input_shape)), rng_(std::make_unique<std::mt19937_64>(seed)) {}
  model(const model& o)
      : input_shape_(o.input_shape_),
        layers_(detail::clone_all(o.layers_)),
        rng_(std::make_unique<std::mt19937_64>(*o.rng_)) {
    for (auto& l : layers_)
      l->set_rng(rng_.get());
  }
  model& operator=(const model& o) {
    if (this != &o) *this = model(o);
    return *this;
  }
  model(model&&) noexcept = default;
  model& operator=(model&&) noexcept = default;

  /// Appends a layer (any `layer<Scalar>` subclass, by value). Throws `shape_error` when it
  /// does not accept the current output shape.
  template <typename Layer>
  model& add(Layer l) {
    std::unique_ptr<layer<Scalar>> p = std::make_unique<Layer>(std::move(l));
    p->output_shape(output_shape());
    p->set_rng(rng_.get());
    layers_.push_back(std::move(p));
    return *this;
  }

  const shape_type& input_shape() const { return input_shape_; }
  /// Per-sample output shape of the first `upto` layers (all by default).
  shape_type output_shape(index_type upto = -1) const {
    shape_type s = input_shape_;
    const index_type n = upto < 0 ? size() : upto;
    for (index_type i = 0; i < n; ++i)
      s = layers_[static_cast<std::size_t>(i)]->output_shape(s);
    return s;
  }
  index_type size() const { return static_cast<index_type>(layers_.size()); }
  layer<Scalar>& at(index_type i) {
    netmorph::detail::require<shape_error>(i >= 0 && i < size(), "model::at: layer ", i,
                                           " out of range for a model of ", size(), " layers");
    return *layers_[static_cast<std::size_t>(i)];
  }
  const layer<Scalar>& at(index_type i) const { return const_cast<model*>(this)->at(i); }
  layer_list<Scalar>& layers() { return layers_; }
  std::mt19937_64& rng() { return *rng_; }

  /// Forward pass on a batch `(N, input_shape...)`; `training` selects batch-norm statistics,
  /// dropout and caching for `backward`.
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training = false) {
    shape_type want = input_shape_;
    want.insert(want.begin(), x.rank() ? x.dim(0) : 0);
    netmorph::detail::require<shape_error>(x.shape() == want, "model::forward: input shape ",
                                           netmorph::detail::shape_string(x.shape()), ", expected ",
                                           netmorph::detail::shape_string(want));
    if (layers_.empty()) return x;
    if (!training) {
      // Two buffers in turn; the training buffers (and what the layers remember for backward)
      // stay untouched.
      tensor<Scalar> a, b;
      const tensor<Scalar>* h = &x;
      for (std::size_t i = 0; i < layers_.size(); ++i) {
        tensor<Scalar>& out = i % 2 == 0 ? a : b;
        layers_[i]->forward_into(*h, out, false);
        h = &out;
      }
      return layers_.size() % 2 == 1 ? std::move(a) : std::move(b);
    }
    // One buffer per layer output, kept across calls: the layers refer to their inputs here for
    // the backward pass, and nothing is allocated once the shapes are stable.
    if (acts_.size() != layers_.size() + 1) acts_.assign(layers_.size() + 1, tensor<Scalar>());
    netmorph::detail::ensure_shape(acts_[0], x.shape());
    std::copy(x.begin(), x.end(), acts_[0].begin());
    for (std::size_t i = 0; i < layers_.size(); ++i)
      layers_[i]->forward_into(acts_[i], acts_[i + 1], true);
    return acts_.back();
  }
  /// Backward pass from dL/d(output); accumulates parameter gradients. Returns dL/d(input)
  /// when `input_grad` is true; otherwise the first layer skips that product (the input is
  /// data) and the result may be empty.
  tensor<Scalar> backward(const tensor<Scalar>& dy, bool input_grad = false) {
    if (layers_.empty()) return dy;
    layers_.front()->set_input_grad(input_grad);
    if (grads_.size() != layers_.size() + 1) grads_.assign(layers_.size() + 1, tensor<Scalar>());
    netmorph::detail::ensure_shape(grads_.back(), dy.shape());
    std::copy(dy.begin(), dy.end(), grads_.back().begin());
    for (std::size_t i = layers_.size(); i-- > 0;)
      layers_[i]->backward_into(grads_[i + 1], grads_[i]);
    return grads_[0];
  }
  std::vector<parameter<Scalar>*> parameters() {
    std::vector<parameter<Scalar>*> out;
    for (auto& l : layers_)
      for (auto* p : l->parameters())
        out.push_back(p);
    return out;
  }
  void zero_grad() {
    for (auto* p : parameters())
      std::fill(p->grad.begin(), p->grad.end(), Scalar(0));
  }
  void after_step() {
    for (auto& l : layers_)
      l->after_step();
  }
  /// Replaces layers `[first, last)` by `replacement` (used by the morph operations).
  void splice(index_type first, index_type last, layer_list<Scalar> replacement) {
    netmorph::detail::require<shape_error>(0 <= first && first <= last && last <= size(),
                                           "model::splice: range [", first, ", ", last,
                                           ") out of range for ", size(), " layers");
    for (auto& l : replacement)
      l->set_rng(rng_.get());
    layers_.erase(layers_.begin() + first, layers_.begin() + last);
    layers_.insert(layers_.begin() + first, std::make_move_iterator(replacement.begin()),
                   std::make_move_iterator(replacement.end()));
    for (auto& l : layers_)
      l->set_input_grad(true);
  }

 private:
  shape_type input_shape_;
  layer_list<Scalar> layers_;
  std::unique_ptr<std::mt19937_64> rng_;
  // Training-mode buffers: layer outputs (acts_[0] holds the input) and their gradients. Scratch,
  // not state: a copied model starts without them.
  std::vector<tensor<Scalar>> acts_, grads_;
};

/// Loss and its gradient.
template <typename Scalar>
struct loss_report {
  double loss = 0;
  tensor<Scalar> grad;     ///< dL/d(logits)
  index_type correct = 0;  ///< samples whose arg-max is the label
};

/// Mean softmax cross-entropy of `logits (N, K)` against integer labels, with its gradient.
/// \throws shape_error / value_error on a label count or label value that does not fit.
template <typename Scalar>
loss_report<Scalar> softmax_cross_entropy(const tensor<Scalar>& logits,
                                          const std::vector<int>& labels) {
  netmorph::detail::require<shape_error>(logits.rank() == 2,
                                         "softmax_cross_entropy: logits must be (N, K), got ",
                                         netmorph::detail::shape_string(logits.shape()));
  const index_type n = logits.dim(0), k = logits.dim(1);
  netmorph::detail::require<shape_error>(static_cast<index_type>(labels.size()) == n,
                                         "softmax_cross_entropy: ", labels.size(), " labels for ",
                                         n, " samples");
  loss_report<Scalar> r;
  r.grad = tensor<Scalar>({n, k});
  for (index_type s = 0; s < n; ++s) {
    const int y = labels[static_cast<std::size_t>(s)];
    netmorph::detail::require<value_error>(y >= 0 && y < k, "softmax_cross_entropy: label ", y,
                                           " of sample ", s, " is outside [0, ", k, ")");
    const Scalar* z = logits.data() + s * k;
    const double zmax = *std::max_element(z, z + k);
    double sum = 0;
    for (index_type j = 0; j < k; ++j)
      sum += std::exp(double(z[j]) - zmax);
    const double lse = zmax + std::log(sum);
    r.loss += lse - double(z[y]);
    index_type best = 0;
    for (index_type j = 0; j < k; ++j) {
      if (z[j] > z[best]) best = j;
      r.grad(s, j) =
          static_cast<Scalar>((std::exp(double(z[j]) - lse) - (j == y ? 1.0 : 0.0)) / double(n));
    }
    r.correct += best == y;
  }
  r.loss /= double(std::max<index_type>(n, 1));
  return r;
}

/// SGD with momentum and weight decay, PyTorch's convention:
/// \f$ v \leftarrow \mu v + (g + \lambda w),\; w \leftarrow w - \eta v \f$.
struct sgd {
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 0.0;

  /// One step on every parameter of the model, then the layers' `after_step` (clamping `a`).
  template <typename Scalar>
  void step(model<Scalar>& m) const {
    for (auto* p : m.parameters()) {
      auto w = p->value.vector();
      auto g = p->grad.vector();
      auto v = p->velocity.vector();
      if (weight_decay != 0) g += static_cast<Scalar>(weight_decay) * w;
      v = static_cast<Scalar>(momentum) * v + g;
      w -= static_cast<Scalar>(lr) * v;
    }
    m.after_step();
  }
};

/// Step schedule: \f$ \eta_e = \eta_0 \gamma^{\lfloor e / s \rfloor} \f$.
struct step_schedule {
  double base_lr = 0.01;
  double gamma = 0.1;
  int step_epochs = 10;
  double operator()(int epoch) const {
    return base_lr * std::pow(gamma, double(epoch / std::max(1, step_epochs)));
  }
};

/// A labelled dataset: `x (N, sample shape...)` and one label per sample.
template <typename Scalar>
struct dataset {
  tensor<Scalar> x;
  std::vector<int> labels;
  index_type size() const { return x.rank() ? x.dim(0) : 0; }
};

/// Rows `idx` of a dataset as a batch.
template <typename Scalar>
dataset<Scalar> gather(const dataset<Scalar>& d, const std::vector<index_type>& idx) {
  shape_type s = d.x.shape();
  const index_type row = d.size() ? d.x.size() / d.size() : 0;
  s[0] = static_cast<index_type>(idx.size());
  dataset<Scalar> b{tensor<Scalar>(s), {}};
  b.labels.reserve(idx.size());
  for (std::size_t i = 0; i < idx.size(); ++i) {
    std::copy(d.x.data() + idx[i] * row, d.x.data() + (idx[i] + 1) * row,
              b.x.data() + static_cast<index_type>(i) * row);
    b.labels.push_back(d.labels[static_cast<std::size_t>(idx[i])]);
  }
  return b;
}

/// Loss, accuracy and throughput of an epoch or an evaluation.
struct epoch_report {
  double loss = 0, accuracy = 0, samples_per_second = 0;
};

/// Mean loss and accuracy in inference mode.
template <typename Scalar>
epoch_report evaluate(model<Scalar>& m, const dataset<Scalar>& d, index_type batch = 256) {
  netmorph::detail::require<value_error>(batch >= 1, "evaluate: batch must be >= 1, got ", batch);
  epoch_report st;
  const auto t0 = std::chrono::steady_clock::now();
  index_type correct = 0;
  for (index_type s = 0; s < d.size(); s += batch) {
    std::vector<index_type> idx(static_cast<std::size_t>(std::min(batch, d.size() - s)));
    std::iota(idx.begin(), idx.end(), s);
    const dataset<Scalar> b = gather(d, idx);
    const loss_report<Scalar> l = softmax_cross_entropy(m.forward(b.x, false), b.labels);
    st.loss += l.loss * double(idx.size());
    correct += l.correct;
  }
  const double n = double(std::max<index_type>(1, d.size()));
  st.loss /= n;
  st.accuracy = double(correct) / n;
  st.samples_per_second =
      double(d.size()) /
      std::max(1e-12, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return st;
}

/// One epoch of minibatch SGD over a shuffled dataset (the model's generator shuffles).
/// Prints a progress line per epoch to `progress` unless it is null.
template <typename Scalar>
epoch_report train_epoch(model<Scalar>& m, const dataset<Scalar>& d, const sgd& opt,
                         index_type batch, int epoch = 0, std::ostream* progress = nullptr) {
  netmorph::detail::require<value_error>(batch >= 1, "train_epoch: batch must be >= 1, got ",
                                         batch);
  netmorph::detail::require<shape_error>(static_cast<index_type>(d.labels.size()) == d.size(),
                                         "train_epoch: ", d.labels.size(), " labels for ", d.size(),
                                         " samples");
  std::vector<index_type> order(static_cast<std::size_t>(d.size()));
  std::iota(order.begin(), order.end(), index_type(0));
  std::shuffle(order.begin(), order.end(), m.rng());
  epoch_report st;
  index_type correct = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (index_type s = 0; s < d.size(); s += batch) {
    const std::vector<index_type> idx(order.begin() + s,
                                      order.begin() + std::min(d.size(), s + batch));
    const dataset<Scalar> b = gather(d, idx);
    m.zero_grad();
    const loss_report<Scalar> l = softmax_cross_entropy(m.forward(b.x, true), b.labels);
    m.backward(l.grad);
    opt.step(m);
    st.loss += l.loss * double(idx.size());
    correct += l.correct;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double n = double(std::max<index_type>(1, d.size()));
  st.loss /= n;
  st.accuracy = double(correct) / n;
  st.samples_per_second = double(d.size()) / std::max(secs, 1e-12);
  if (progress) {
    *progress << "epoch " << epoch << "  loss " << st.loss << "  accuracy " << st.accuracy
              << "  samples/s " << static_cast<long long>(st.samples_per_second) << "  lr "
              << opt.lr << std::endl;
  }
  return st;
}

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_MODEL_HPP

#ifndef NETMORPH_NN_MODEL_HPP
#define NETMORPH_NN_MODEL_HPP

/// \file model.hpp
/// A sequential model with parallel blocks, softmax cross-entropy, the optimizers (SGD with
/// momentum and weight decay, Adam, AdamW), a learning-rate schedule, and training/evaluation
/// loops.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace netmorph {
namespace nn {

namespace detail {

inline void require_valid_name(const std::string& name, const char* who);

/// Gives `l` the name `name` and, when it is a parallel block, names its paths' layers
/// (recursively): a layer that already has a name starting with `name.` keeps it (PyTorch's
/// `layer1.0.conv1` inside the block `layer1.0`), any other is named `name.path<i>.<j>`.
template <typename Scalar>
void assign_names(layer<Scalar>& l, const std::string& name) {
  l.set_name(name);
  if (auto* p = layer_cast<parallel>(&l))
    for (std::size_t i = 0; i < p->paths().size(); ++i)
      for (std::size_t j = 0; j < p->paths()[i].size(); ++j) {
        layer<Scalar>& q = *p->paths()[i][j];
        const bool keep = q.name().size() > name.size() + 1 &&
                          q.name().compare(0, name.size() + 1, name + ".") == 0;
        if (keep) require_valid_name(q.name(), "model");
        assign_names(q, keep ? q.name() : netmorph::detail::cat(name, ".path", i, ".", j));
      }
}

/// Throws value_error naming `what` when `names` holds a name twice.
inline void require_distinct(std::vector<std::string> names, const char* what) {
  std::sort(names.begin(), names.end());
  const auto twice = std::adjacent_find(names.begin(), names.end());
  netmorph::detail::require<value_error>(twice == names.end(), what, ": the layer name '",
                                         twice == names.end() ? std::string() : *twice,
                                         "' is given twice");
}

/// Throws value_error naming `who` unless `name` is dot-separated segments of letters, digits,
/// '_' and '-' (state_dict style: "3", "features.3", "layer1.0.bn1"), so that files and the
/// command line can carry it.
inline void require_valid_name(const std::string& name, const char* who) {
  bool ok = !name.empty() && name.front() != '.' && name.back() != '.';
  for (std::size_t i = 0; ok && i < name.size(); ++i) {
    const char c = name[i];
    const bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-';
    ok = word || (c == '.' && name[i + 1] != '.');
  }
  if (!ok)
    throw value_error(
        netmorph::detail::cat(who, ": layer name '", name,
                              "' must be dot-separated segments of letters, digits, '_' and '-'"));
}

/// Appends the names of `l` and of the layers inside it, depth first.
template <typename Scalar>
void collect_names(const layer<Scalar>& l, std::vector<std::string>& out) {
  out.push_back(l.name());
  if (const auto* p = layer_cast<parallel>(&l))
    for (const auto& path : p->paths())
      for (const auto& q : path)
        collect_names(*q, out);
}

}  // namespace detail

/// Where a layer sits in a model: the list that owns it (the model's top level or a path of a
/// parallel block) and its position there.
template <typename Scalar>
struct layer_slot {
  layer_list<Scalar>* list = nullptr;
  index_type position = 0;
  layer<Scalar>& get() const { return *(*list)[static_cast<std::size_t>(position)]; }
};

/// A sequential model on per-sample inputs of `input_shape` (e.g. `{1, 28, 28}` or `{784}`), with
/// parallel blocks. Copying a model deep-copies its layers (parameters, gradients, optimizer
/// state).
///
/// Layer names: every layer has a unique name, state_dict style, which morphs, reports and files
/// use. `add` names a top-level layer by the number of layers added before it ("0", "1", ...)
/// unless given a name; the layers of a parallel block `N` keep names of the form `N.<rest>` given
/// to them (`set_name`) and are otherwise `N.path<i>.<j>` (layer `j` of path `i`). `replace`
/// keeps names predictable: replacing `k` layers by `k` layers keeps their names, replacing one
/// layer `N` by several names them `N.0`, `N.1`, ... (as an `nn.Sequential` at `N`); nothing
/// else is renamed.
template <typename Scalar>
class model {
  using name_set = std::unordered_set<std::string>;

 public:
  explicit model(shape_type input_shape, std::uint64_t seed = 0)
      : input_shape_(std::move(input_shape)), rng_(std::make_unique<std::mt19937_64>(seed)) {}
  model(const model& o)
      : input_shape_(o.input_shape_),
        layers_(detail::clone_all(o.layers_)),
        names_(o.names_),
        output_shape_(o.output_shape_),
        generation_(next_generation()),
        rng_(std::make_unique<std::mt19937_64>(*o.rng_)),
        added_(o.added_) {
    for (auto& l : layers_)
      l->set_rng(rng_.get());
  }
  model& operator=(const model& o) {
    if (this != &o) *this = model(o);
    return *this;
  }
  /// A move takes the layers and the generation; the source gets a new generation, so a token of
  /// a change made before the move restores only in the model that now holds the layers.
  model(model&& o) noexcept
      : input_shape_(std::move(o.input_shape_)),
        layers_(std::move(o.layers_)),
        names_(std::move(o.names_)),
        output_shape_(std::move(o.output_shape_)),
        generation_(o.generation_),
        rng_(std::move(o.rng_)),
        added_(o.added_),
        input_(std::move(o.input_)),
        buffers_(std::move(o.buffers_)) {
    o.generation_ = next_generation();
  }
  model& operator=(model&& o) noexcept {
    if (this != &o) {
      input_shape_ = std::move(o.input_shape_);
      layers_ = std::move(o.layers_);
      names_ = std::move(o.names_);
      output_shape_ = std::move(o.output_shape_);
      generation_ = o.generation_;
      rng_ = std::move(o.rng_);
      added_ = o.added_;
      input_ = std::move(o.input_);
      buffers_ = std::move(o.buffers_);
      o.generation_ = next_generation();
    }
    return *this;
  }

  /// Appends a layer (any `layer<Scalar>` subclass, by value) under `name` (default: the number
  /// of layers added before it).
  /// \throws shape_error when it does not accept the current output shape; value_error when the
  ///         name is taken.
  template <typename Layer>
  model& add(Layer l, std::string name = "") {
    std::unique_ptr<layer<Scalar>> p = std::make_unique<Layer>(std::move(l));
    // The shape after the last layer is kept, so that building a model of n layers costs O(n).
    shape_type out = p->output_shape(output_shape());
    if (name.empty()) {
      index_type k = added_;
      while (names_.count(std::to_string(k)))
        ++k;
      name = std::to_string(k);
    }
    detail::require_valid_name(name, "model::add");
    detail::assign_names(*p, name);
    std::vector<std::string> added;  // the layer's name and those inside it (a parallel block)
    detail::collect_names(*p, added);
    detail::require_distinct(added, "model::add");
    for (const std::string& n : added)
      netmorph::detail::require<value_error>(names_.count(n) == 0, "model::add: a layer named '", n,
                                             "' exists already");
    if (layers_.size() == layers_.capacity())  // geometric growth: reserve(size + 1) is O(n)
      layers_.reserve(std::max<std::size_t>(8, 2 * layers_.capacity()));
    std::size_t inserted = 0;
    try {
      for (; inserted < added.size(); ++inserted)
        names_.insert(added[inserted]);
    } catch (...) {
      for (std::size_t k = 0; k < inserted; ++k)
        names_.erase(added[k]);
      throw;
    }
    // Nothing below allocates or throws.
    p->set_rng(rng_.get());
    layers_.push_back(std::move(p));
    output_shape_.swap(out);
    generation_ = next_generation();
    ++added_;
    return *this;
  }

  const shape_type& input_shape() const { return input_shape_; }
  /// Per-sample output shape of the first `upto` top-level layers (all by default).
  shape_type output_shape(index_type upto = -1) const {
    if (upto < 0 || upto >= size()) return output_shape_;
    return shape_through(upto);
  }
  /// Number of top-level layers.
  index_type size() const { return static_cast<index_type>(layers_.size()); }
  /// Top-level layer `i`. \throws shape_error when out of range.
  layer<Scalar>& at(index_type i) {
    netmorph::detail::require<shape_error>(i >= 0 && i < size(), "model::at: layer ", i,
                                           " out of range for a model of ", size(), " layers");
    return *layers_[static_cast<std::size_t>(i)];
  }
  const layer<Scalar>& at(index_type i) const { return const_cast<model*>(this)->at(i); }
  /// The top-level layers, in order. The list is read-only (the model keeps its names and
  /// output shape from `add`, `replace` and `restore`); the layers themselves may be changed
  /// (weights, statistics), but not renamed.
  const layer_list<Scalar>& layers() const { return layers_; }
  /// The generator of dropout and of `train_epoch`'s shuffling, seeded by the constructor.
  std::mt19937_64& rng() { return *rng_; }

  /// The names of all layers, those inside parallel blocks included, depth first.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& l : layers_)
      detail::collect_names(*l, out);
    return out;
  }
  /// Where the layer called `name` sits. \throws value_error naming the layers when none is.
  layer_slot<Scalar> locate(const std::string& name) {
    layer_slot<Scalar> slot;
    if (!locate_in(layers_, name, slot)) {
      std::string known;
      for (const std::string& n : names())
        known += (known.empty() ? "'" : ", '") + n + "'";
      throw value_error(
          netmorph::detail::cat("model: no layer named '", name, "'; the layers are ", known));
    }
    return slot;
  }
  /// The layer called `name`. \throws value_error when there is none.
  layer<Scalar>& find(const std::string& name) { return locate(name).get(); }
  const layer<Scalar>& find(const std::string& name) const {
    return const_cast<model*>(this)->find(name);
  }

  /// What `replace` took out of the model (the layers, and the names and output shape before
  /// it), to put back with `restore`.
  class replaced {
   public:
    replaced(replaced&&) noexcept = default;
    replaced& operator=(replaced&&) noexcept = default;
    /// The layers taken out, in order.
    const layer_list<Scalar>& layers() const { return removed_; }

   private:
    friend class model;
    replaced() = default;
    std::uint64_t generation_ = 0;        // the model's generation right after the replace; 0: used
    layer_list<Scalar>* list_ = nullptr;  // a parallel block's path, or null for the top level
    index_type pos_ = 0, inserted_ = 0;
    layer_list<Scalar> removed_;
    // `replace_each`: where each swapped layer sits (list as above, position), and the old layers.
    std::vector<std::pair<layer_list<Scalar>*, index_type>> swapped_;
    name_set names_;
    shape_type output_shape_;
  };

  /// Replaces `count` consecutive layers starting with the one called `first` (in the same list:
  /// the top level or one path of a parallel block) by `replacement`, named by the rule above,
  /// and checks the new model's shapes. A replacement that does not fit leaves the model exactly
  /// as it was (strong exception guarantee). Returns the removed layers; `restore` puts them back
  /// without allocating, so a caller that finds the new model wanting later (a model morph whose
  /// probe fails) can undo the replacement whatever the failure.
  /// \throws value_error on an unknown name, a range past the end of its list, a count the naming
  ///         rule does not cover, or a name that would collide; shape_error when the new model's
  ///         shapes do not fit.
  replaced replace(const std::string& first, index_type count, layer_list<Scalar> replacement) {
    const layer_slot<Scalar> slot = locate(first);
    layer_list<Scalar>& list = *slot.list;
    const index_type pos = slot.position, n = static_cast<index_type>(replacement.size());
    netmorph::detail::require<value_error>(
        count >= 1 && pos + count <= static_cast<index_type>(list.size()),
        "model::replace: ", count, " layers from '", first, "' run past the end of its list of ",
        list.size());
    netmorph::detail::require<value_error>(
        n >= 1 && (n == count || count == 1), "model::replace: ", count,
        " layers cannot be replaced by ", n, " (k by k keeps the names, 1 by n names them '", first,
        ".0', ...)");
    for (const auto& l : replacement)
      netmorph::detail::require<value_error>(l != nullptr, "model::replace: a null layer");
    // Name the replacement and check the names before anything changes.
    std::vector<std::string> removed_names;
    for (index_type k = 0; k < count; ++k)
      detail::collect_names(*list[static_cast<std::size_t>(pos + k)], removed_names);
    for (index_type k = 0; k < n; ++k)
      detail::assign_names(*replacement[static_cast<std::size_t>(k)],
                           n == count ? list[static_cast<std::size_t>(pos + k)]->name()
                                      : netmorph::detail::cat(first, ".", k));
    std::vector<std::string> added;
    for (const auto& l : replacement)
      detail::collect_names(*l, added);
    detail::require_distinct(added, "model::replace");
    std::sort(removed_names.begin(), removed_names.end());
    for (const std::string& a : added) {
      const bool removed = std::binary_search(removed_names.begin(), removed_names.end(), a);
      netmorph::detail::require<value_error>(
          removed || names_.count(a) == 0, "model::replace: the new layer name '", a, "' is taken");
    }
    // Everything that allocates happens here, before the model changes: the removed list, room
    // in `list` for both the new and the old layers (so that swapping either in or back moves
    // pointers only), and the new name set.
    layer_list<Scalar> removed;
    removed.reserve(static_cast<std::size_t>(count));
    list.reserve(std::max(list.size(), list.size() - std::size_t(count) + std::size_t(n)));
    name_set new_names = names_;
    for (const std::string& r : removed_names)
      new_names.erase(r);
    new_names.insert(added.begin(), added.end());
    // Swap the layers in (unique_ptr moves cannot throw), check the shapes, and swap the old ones
    // back if they do not fit.
    const auto at = [&](index_type k) { return list.begin() + pos + k; };
    std::move(at(0), at(count), std::back_inserter(removed));
    list.erase(at(0), at(count));
    list.insert(at(0), std::make_move_iterator(replacement.begin()),
                std::make_move_iterator(replacement.end()));
    replaced undo;
    undo.list_ = &list == &layers_ ? nullptr : &list;  // the top level moves with the model
    undo.pos_ = pos;
    undo.inserted_ = n;
    undo.removed_ = std::move(removed);
    undo.names_.swap(new_names);  // the new names, swapped with the model's by `commit`
    commit(undo);
    for (index_type k = 0; k < n; ++k)
      (*at(k))->set_rng(rng_.get());
    return undo;
  }

  /// Replaces each named layer by the layer paired with it, one by one and under the same name, in
  /// one change: the shapes are checked once, after every swap (the layers of a channel group
  /// grow together, and no single swap fits on its own). None may be a parallel block. Strong
  /// exception guarantee; `restore` undoes the whole change, as for `replace`.
  /// \throws value_error on an unknown or repeated name, a null layer or a parallel block;
  ///         shape_error when the new model's shapes do not fit.
  replaced replace_each(std::vector<std::pair<std::string, std::unique_ptr<layer<Scalar>>>> swaps) {
    std::vector<std::pair<layer_list<Scalar>*, index_type>> where;
    where.reserve(swaps.size());
    std::vector<std::string> names;
    for (auto& s : swaps) {
      netmorph::detail::require<value_error>(
          s.second != nullptr, "model::replace_each: a null layer for '", s.first, "'");
      const layer_slot<Scalar> slot = locate(s.first);
      netmorph::detail::require<value_error>(
          slot.get().kind() != layer_kind::parallel && s.second->kind() != layer_kind::parallel,
          "model::replace_each: '", s.first, "' is or becomes a parallel block");
      where.emplace_back(slot.list, slot.position);
      names.push_back(s.first);
    }
    detail::require_distinct(names, "model::replace_each");
    replaced undo;
    undo.removed_.reserve(swaps.size());
    undo.names_ = names_;  // the names do not change
    for (auto& s : swaps)
      s.second->set_name(s.first);
    // Nothing below allocates until the shape check: swap the layers in, pointer by pointer.
    for (std::size_t k = 0; k < swaps.size(); ++k) {
      auto& at = (*where[k].first)[static_cast<std::size_t>(where[k].second)];
      std::swap(at, swaps[k].second);
      undo.removed_.push_back(std::move(swaps[k].second));
      if (where[k].first == &layers_) where[k].first = nullptr;  // the top level moves with us
    }
    undo.swapped_ = std::move(where);
    commit(undo);
    for (const auto& [list, pos] : undo.swapped_)
      (*(list ? list : &layers_))[static_cast<std::size_t>(pos)]->set_rng(rng_.get());
    return undo;
  }

  /// Undoes the last `replace`, whose result `r` is: the model is again exactly as it was before
  /// it (the replacement's layers are destroyed). Allocates nothing, and with a valid `r` cannot
  /// fail.
  /// \throws value_error, changing nothing, unless `r` comes from the last change of this model
  ///         (no `add` or other `replace` since, not restored already, not another model's).
  void restore(replaced&& r) {
    netmorph::detail::require<value_error>(
        r.generation_ != 0 && r.generation_ == generation_,
        "model::restore: the replacement is not this model's last change (restored already, "
        "from another model, or the model changed since)");
    swap_back(r);
    names_.swap(r.names_);
    output_shape_.swap(r.output_shape_);
    generation_ = next_generation();
    r.generation_ = 0;
  }

  /// Forward pass on a batch `(N, input_shape...)`; `training` selects batch-norm statistics,
  /// dropout and caching for `backward`.
  /// \throws shape_error when the batch does not have the input shape.
  tensor<Scalar> forward(const tensor<Scalar>& x, bool training = false) {
    shape_type want = input_shape_;
    want.insert(want.begin(), x.rank() ? x.dim(0) : 0);
    netmorph::detail::require<shape_error>(x.shape() == want, "model::forward: input shape ",
                                           netmorph::detail::shape_string(x.shape()), ", expected ",
                                           netmorph::detail::shape_string(want));
    if (!training) return detail::infer_sequence(layers_, x);
    // The model keeps its own copy of the input, which the first layer refers to until
    // backward; it lives on the heap so that it stays put when the model is moved.
    if (!input_) input_ = std::make_unique<tensor<Scalar>>();
    netmorph::detail::ensure_shape(*input_, x.shape());
    std::copy(x.begin(), x.end(), input_->begin());
    return detail::forward_sequence(layers_, *input_, buffers_);
  }
  /// Backward pass from dL/d(output); accumulates parameter gradients. Returns dL/d(input)
  /// when `input_grad` is true; otherwise the first layer skips that product (the input is
  /// data) and the result may be empty.
  tensor<Scalar> backward(const tensor<Scalar>& dy, bool input_grad = false) {
    if (layers_.empty()) return dy;
    layers_.front()->set_input_grad(input_grad);
    return detail::backward_sequence(layers_, dy, buffers_);
  }
  /// Every trainable parameter, in layer order (those inside parallel blocks included).
  std::vector<parameter<Scalar>*> parameters() {
    std::vector<parameter<Scalar>*> out;
    for (auto& l : layers_)
      for (auto* p : l->parameters())
        out.push_back(p);
    return out;
  }
  /// Sets every parameter's gradient to zero.
  void zero_grad() {
    for (auto* p : parameters())
      std::fill(p->grad.begin(), p->grad.end(), Scalar(0));
  }
  /// Lets every layer react to an optimizer step (P-activations clamp `a`).
  void after_step() {
    for (auto& l : layers_)
      l->after_step();
  }

 private:
  static bool locate_in(layer_list<Scalar>& list, const std::string& name,
                        layer_slot<Scalar>& slot) {
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (list[i]->name() == name) {
        slot = layer_slot<Scalar>{&list, static_cast<index_type>(i)};
        return true;
      }
      if (auto* p = layer_cast<parallel>(list[i].get()))
        for (auto& path : p->paths())
          if (locate_in(path, name, slot)) return true;
    }
    return false;
  }

  /// The per-sample shape after the first `n` top-level layers, computed layer by layer.
  /// \throws shape_error when a layer does not accept its input.
  shape_type shape_through(index_type n) const {
    shape_type s = input_shape_;
    for (index_type i = 0; i < n; ++i)
      s = layers_[static_cast<std::size_t>(i)]->output_shape(s);
    return s;
  }

  /// A value no model has had: every change gets one, so that `restore` can tell its token.
  static std::uint64_t next_generation() {
    static std::atomic<std::uint64_t> last{0};
    return ++last;
  }

  /// The end of `replace` and `replace_each`, after the layers were swapped in: checks the new
  /// model's shapes (swapping the old layers back when they do not fit), then takes the new names
  /// from `undo` and leaves the old names and output shape there for `restore`. Allocates
  /// nothing after the shape check.
  void commit(replaced& undo) {
    shape_type out;
    try {
      out = shape_through(size());
    } catch (...) {
      swap_back(undo);
      throw;
    }
    names_.swap(undo.names_);
    output_shape_.swap(out);
    undo.output_shape_.swap(out);
    generation_ = next_generation();
    undo.generation_ = generation_;
    for (auto& l : layers_)
      l->set_input_grad(true);
  }

  /// Puts the layers `r` took out back in place of the ones `replace` inserted.
  void swap_back(replaced& r) noexcept {
    if (!r.swapped_.empty()) {  // from `replace_each`: swap the old layers back, last first
      for (std::size_t k = r.swapped_.size(); k-- > 0;) {
        layer_list<Scalar>& list = r.swapped_[k].first ? *r.swapped_[k].first : layers_;
        std::swap(list[static_cast<std::size_t>(r.swapped_[k].second)], r.removed_[k]);
      }
      r.removed_.clear();  // now the replacement's layers: destroyed
      r.swapped_.clear();
      return;
    }
    layer_list<Scalar>& list = r.list_ ? *r.list_ : layers_;
    const auto at = [&](index_type k) { return list.begin() + r.pos_ + k; };
    list.erase(at(0), at(r.inserted_));
    // No reallocation: `replace` reserved room for the old layers.
    list.insert(at(0), std::make_move_iterator(r.removed_.begin()),
                std::make_move_iterator(r.removed_.end()));
    r.removed_.clear();
    r.inserted_ = 0;
  }

  shape_type input_shape_;
  layer_list<Scalar> layers_;
  name_set names_;                          // every layer's name, those inside parallel blocks too
  shape_type output_shape_ = input_shape_;  // after the last layer
  std::uint64_t generation_ = next_generation();  // changes with every add, replace, restore
  std::unique_ptr<std::mt19937_64> rng_;
  index_type added_ = 0;  // layers added so far, for default names
  // Training-mode scratch: the input copy and the layer outputs and gradients, which layers refer
  // to between forward and backward (heap storage: a move keeps them in place). Not state: a
  // copied model starts without them (its layers own copies of what they cached).
  std::unique_ptr<tensor<Scalar>> input_;
  detail::sequence_buffers<Scalar> buffers_;
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

/// Adam (Kingma and Ba), and AdamW (Loshchilov and Hutter) when `decoupled_weight_decay` is set
/// (`adamw()` makes one), PyTorch's convention: per parameter, with its own step count `t`,
/// \f$ g \leftarrow g + \lambda w \f$ (Adam) or \f$ w \leftarrow (1 - \eta\lambda) w \f$ (AdamW),
/// \f$ m \leftarrow \beta_1 m + (1-\beta_1) g,\; v \leftarrow \beta_2 v + (1-\beta_2) g^2,\;
/// w \leftarrow w - \eta\, \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon} \f$.
/// The step count is the parameter's own, so a parameter a morph creates starts its bias
/// correction at 1 while the others keep theirs (docs/DESIGN.md §8.4).
struct adam {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  ///< AdamW: decay the weights, not through the gradient

  /// One step on every parameter of the model (allocating its moments on its first step), then
  /// the layers' `after_step`.
  template <typename Scalar>
  void step(model<Scalar>& m) const {
    const Scalar b1 = static_cast<Scalar>(beta1), b2 = static_cast<Scalar>(beta2);
    for (auto* p : m.parameters()) {
      if (p->exp_avg.empty()) {
        p->exp_avg = tensor<Scalar>(p->value.shape());
        p->exp_avg_sq = tensor<Scalar>(p->value.shape());
      }
      ++p->step;
      auto wv = p->value.vector();
      auto gv = p->grad.vector();
      auto mv = p->exp_avg.vector();
      auto vv = p->exp_avg_sq.vector();
      auto w = wv.array();
      auto g = gv.array();
      auto mo = mv.array();
      auto ve = vv.array();
      if (weight_decay != 0 && decoupled_weight_decay)
        w *= static_cast<Scalar>(1.0 - lr * weight_decay);
      if (weight_decay != 0 && !decoupled_weight_decay) g += static_cast<Scalar>(weight_decay) * w;
      mo = b1 * mo + (Scalar(1) - b1) * g;
      ve = b2 * ve + (Scalar(1) - b2) * g.square();
      const double t = double(p->step);
      const double c1 = 1.0 - std::pow(beta1, t), c2 = std::sqrt(1.0 - std::pow(beta2, t));
      w -= static_cast<Scalar>(lr / c1) * mo /
           (ve.sqrt() / static_cast<Scalar>(c2) + static_cast<Scalar>(eps));
    }
    m.after_step();
  }
};

/// An AdamW optimizer: Adam with decoupled weight decay, PyTorch's defaults.
inline adam adamw(double lr = 1e-3, double weight_decay = 1e-2) {
  adam a;
  a.lr = lr;
  a.weight_decay = weight_decay;
  a.decoupled_weight_decay = true;
  return a;
}

/// One of the optimizers above, which `train_epoch` and the model files take: built implicitly
/// from an `sgd` or an `adam`, whose hyper-parameters it checks.
class optimizer {
 public:
  /// \throws value_error naming `nn::optimizer` and the value: a learning rate, momentum or
  ///         weight decay that is negative or not finite.
  optimizer(const sgd& s) : settings_(s) { check(); }  // NOLINT: implicit on purpose
  /// \throws value_error as above, and for betas outside [0, 1) or eps <= 0.
  optimizer(const adam& a) : settings_(a) { check(); }  // NOLINT: implicit on purpose

  /// "sgd", "adam" or "adamw": the name files and the command line use.
  std::string kind() const {
    if (const adam* a = as_adam()) return a->decoupled_weight_decay ? "adamw" : "adam";
    return "sgd";
  }
  /// The SGD settings, or null.
  const sgd* as_sgd() const { return std::get_if<sgd>(&settings_); }
  /// The Adam or AdamW settings, or null.
  const adam* as_adam() const { return std::get_if<adam>(&settings_); }
  /// The learning rate.
  double lr() const {
    return std::visit([](const auto& o) { return o.lr; }, settings_);
  }
  /// Sets the learning rate (a schedule's value).
  /// \throws value_error as the constructors, leaving the optimizer as it was.
  void set_lr(double lr) {
    optimizer changed = *this;
    std::visit([lr](auto& o) { o.lr = lr; }, changed.settings_);
    changed.check();
    *this = changed;
  }
  /// One step of the chosen optimizer on every parameter of `m`.
  template <typename Scalar>
  void step(model<Scalar>& m) const {
    std::visit([&m](const auto& o) { o.step(m); }, settings_);
  }

 private:
  void check() const {
    const auto require = [](bool ok, const char* what, double v) {
      netmorph::detail::require<value_error>(ok, "nn::optimizer: ", what, " ", v,
                                             " is out of range");
    };
    const auto non_negative = [](double v) { return std::isfinite(v) && v >= 0; };
    const auto beta = [](double v) { return std::isfinite(v) && v >= 0 && v < 1; };
    if (const sgd* s = as_sgd()) {
      require(non_negative(s->lr), "the learning rate", s->lr);
      require(non_negative(s->momentum), "the momentum", s->momentum);
      require(non_negative(s->weight_decay), "the weight decay", s->weight_decay);
    } else {
      const adam& a = *as_adam();
      require(non_negative(a.lr), "the learning rate", a.lr);
      require(beta(a.beta1), "beta1 (in [0, 1))", a.beta1);
      require(beta(a.beta2), "beta2 (in [0, 1))", a.beta2);
      require(std::isfinite(a.eps) && a.eps > 0, "eps (> 0)", a.eps);
      require(non_negative(a.weight_decay), "the weight decay", a.weight_decay);
    }
  }

  std::variant<sgd, adam> settings_;
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
  netmorph::detail::require<shape_error>(static_cast<index_type>(d.labels.size()) == d.size(),
                                         "evaluate: ", d.labels.size(), " labels for ", d.size(),
                                         " samples");
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

/// One epoch of minibatch training with `opt` over a shuffled dataset (the model's generator
/// shuffles).
/// Prints a progress line per epoch to `progress` unless it is null.
template <typename Scalar>
epoch_report train_epoch(model<Scalar>& m, const dataset<Scalar>& d, const optimizer& opt,
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
              << opt.lr() << std::endl;
  }
  return st;
}

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_MODEL_HPP

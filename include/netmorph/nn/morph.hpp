#ifndef NETMORPH_NN_MORPH_HPP
#define NETMORPH_NN_MORPH_HPP

/// \file morph.hpp
/// Morph operations on a whole model, addressed by layer name (or top-level index). Each is a
/// transaction: it probes the parent, builds the replacement layers on the side with the
/// weight-level morph, swaps them in (`model::replace` checks the new model's shapes and
/// restores the old layers when they do not fit), and only then measures the whole model's
/// function preservation on probe inputs in inference mode; when that measurement fails (an
/// exception of any kind, `std::bad_alloc` included) `model::restore` puts the parent's layers
/// back. A morph that throws leaves the model, its SGD velocities and its buffers exactly as they
/// were (the strong guarantee, for every exception; docs/DESIGN.md §8.3).
///
/// What the model determines is derived, never silently overwritten: the activation of the
/// P-activations inserted between new layers (`phi`) is the one that follows the morphed layer
/// (the first activation or P-activation before the next conv2d/dense layer; when none does, the
/// caller's `phi`, else ReLU); a `phi` set by the caller must agree with it. Weight-level probing
/// is skipped: the report's output errors are the whole model's on `probe.count` inputs seeded by
/// the options' seed (`probe.size` must stay 0: the model's input shape fixes the probes').
/// `new_layers` names the layers the morph made or changed.
///
/// Neighbours are kept consistent: the next layer's inputs, a batch norm between (widened with
/// its running statistics), a flatten followed by a dense layer (`H*W` columns per channel).
/// SGD velocities are carried over: unchanged parameters keep theirs, moved with any channel
/// permutation; new parameters start at zero.
///
/// Names follow `model::replace`: `deepen` and `to_subnet` turn layer `N` into `N.0`, `N.1`, ...;
/// `to_stacked_subnet` makes `N` a parallel block with layers `N.path<i>.<j>`; `widen` and
/// `grow_kernel` keep every name. A layer inside a parallel path is morphed in place in its path.
///
/// Batch norm inserted by `deepen` (`insert_batch_norm`) is the identity in inference mode. In
/// training mode it normalises with the batch's own statistics, so right after the morph a
/// training-mode forward pass differs from the parent's; function preservation is measured, and
/// promised, in inference mode.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/morph/depth.hpp>
#include <netmorph/morph/kernel_size.hpp>
#include <netmorph/morph/report.hpp>
#include <netmorph/morph/subnet.hpp>
#include <netmorph/morph/width.hpp>
#include <netmorph/nn/model.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace netmorph {
namespace nn {

/// Which layer a model morph addresses: a name (`"3"`, `"features.3"`, `"2.path0.1"`) or the
/// index of a top-level layer.
class layer_ref {
 public:
  layer_ref(std::string name) : name_(std::move(name)) {}
  layer_ref(const char* name) : name_(name) {}
  template <typename Int, typename = std::enable_if_t<std::is_integral<Int>::value>>
  layer_ref(Int index) : index_(static_cast<index_type>(index)) {}

  /// The layer's name in `m`. \throws shape_error on an index out of range.
  template <typename Scalar>
  std::string name(const model<Scalar>& m) const {
    return index_ ? m.at(*index_).name() : name_;
  }

 private:
  std::string name_;
  std::optional<index_type> index_;
};

namespace detail {

using netmorph::detail::cat;
using netmorph::detail::require;

/// The whole model's output on random probe inputs, before a morph, to compare after it.
template <typename Scalar>
class model_probe {
 public:
  model_probe(model<Scalar>& m, std::uint64_t seed, const probe_options& probe, const char* who) {
    require<value_error>(probe.count >= 0, who, ": probe.count must be >= 0, got ", probe.count);
    require<value_error>(probe.size == 0, who, ": probe.size is ", probe.size,
                         " but a model is probed at its input shape; leave it 0");
    if (probe.count == 0) return;
    std::mt19937_64 rng = netmorph::detail::probe_rng(seed);
    shape_type s = m.input_shape();
    s.insert(s.begin(), probe.count);
    x_ = tensor<Scalar>::random_normal(s, rng);
    before_ = m.forward(x_, false);
  }
  void measure(model<Scalar>& m, morph_report& rep) const {
    rep.probes = 0;
    rep.max_output_error.reset();
    rep.relative_output_error.reset();
    if (x_.empty()) return;
    netmorph::detail::record_output_error(rep, m.forward(x_, false), before_);
  }

 private:
  tensor<Scalar> x_, before_;
};

/// What a model morph swaps in: `count` layers from its target replaced by `layers`, of which
/// those at `changed` are new or changed (all when empty; the rest are clones).
template <typename Scalar>
struct replacement {
  index_type count = 1;
  layer_list<Scalar> layers;
  std::vector<std::size_t> changed;
  morph_report report;
};

/// The transaction of every model morph (see the file comment). `build()` returns a
/// `replacement<Scalar>` and may throw; nothing in the model changes before it has returned.
template <typename Scalar, typename Build>
morph_report transact(model<Scalar>& m, const std::string& name, const char* who,
                      std::uint64_t seed, const probe_options& probe, Build&& build) {
  const auto t0 = std::chrono::steady_clock::now();
  const model_probe<Scalar> pr(m, seed, probe, who);
  replacement<Scalar> r = build();
  std::vector<const layer<Scalar>*> added;
  for (std::size_t k = 0; k < r.layers.size(); ++k)
    if (r.changed.empty() || std::find(r.changed.begin(), r.changed.end(), k) != r.changed.end())
      added.push_back(r.layers[k].get());
  morph_report rep = std::move(r.report);
  rep.layer = name;
  rep.new_layers.clear();
  rep.new_layers.reserve(added.size());
  auto undo = m.replace(name, r.count, std::move(r.layers));
  // From here on the model is the child; whatever fails (the probe's forward pass, its
  // allocations, the report's strings) puts the parent's layers back before it propagates.
  try {
    for (const auto* l : added)
      rep.new_layers.push_back(l->name());
    pr.measure(m, rep);
  } catch (...) {
    m.restore(std::move(undo));
    throw;
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

/// "conv2d 3->8 3x3 ..." of the layer in a message.
template <typename Scalar>
[[noreturn]] void wrong_kind(const char* who, const layer<Scalar>& l, const char* want) {
  throw value_error(cat(who, ": layer '", l.name(), "' is ", l.describe(), ", expected ", want));
}

/// The activation after the layer at `slot`: the first activation or P-activation before the
/// next conv2d/dense layer in the same list, if any.
template <typename Scalar>
std::optional<activation_fn> following_activation(const layer_slot<Scalar>& slot) {
  const layer_list<Scalar>& list = *slot.list;
  for (std::size_t k = static_cast<std::size_t>(slot.position) + 1; k < list.size(); ++k) {
    const layer<Scalar>* l = list[k].get();
    if (const auto* a = layer_cast<activation>(l)) return a->fn();
    if (const auto* p = layer_cast<p_activation>(l)) return p->fn().phi;
    if (l->kind() == layer_kind::conv2d || l->kind() == layer_kind::dense) break;
  }
  return std::nullopt;
}

/// Equal kinds, and equal parameters where the kind has one (leaky ReLU's slope, ELU's alpha).
inline bool same_activation(const activation_fn& a, const activation_fn& b) {
  return a.kind == b.kind && (!a.has_param() || a.param == b.param);
}

/// "tanh", or "elu(1)" for a kind with a parameter.
inline std::string describe_activation(const activation_fn& a) {
  return a.has_param() ? cat(to_string(a.kind), "(", a.param, ")") : std::string(to_string(a.kind));
}

/// `derived` (when the model determines none: the caller's `phi`, else ReLU), after checking that a
/// `phi` set by the caller agrees with it.
inline activation_fn derive_phi(const std::optional<activation_fn>& set,
                                const std::optional<activation_fn>& derived, const char* who,
                                const std::string& name) {
  if (set && derived && !same_activation(*set, *derived))
    throw value_error(cat(who, ": options.phi is ", describe_activation(*set), " but layer '", name,
                          "' is followed by ", describe_activation(*derived),
                          "; leave phi unset, the model determines it"));
  if (derived) return *derived;
  return set ? *set : activation_fn{activation_kind::relu, 0.01};
}

template <typename Scalar>
std::unique_ptr<layer<Scalar>> make_layer(const conv2d_weights<Scalar>& w) {
  return std::make_unique<conv2d<Scalar>>(w.weight, w.bias, w.options);
}
template <typename Scalar>
std::unique_ptr<layer<Scalar>> make_layer(const dense_weights<Scalar>& w) {
  return std::make_unique<dense<Scalar>>(w.weight, w.bias);
}

/// A conv2d chain as model layers with its P-activations between them.
template <typename Scalar>
layer_list<Scalar> chain_layers(const conv2d_chain<Scalar>& chain) {
  layer_list<Scalar> list;
  for (std::size_t k = 0; k < chain.layers.size(); ++k) {
    if (k) list.push_back(std::make_unique<p_activation<Scalar>>(chain.between[k - 1]));
    list.push_back(make_layer(chain.layers[k]));
  }
  return list;
}

/// The model morph of a single conv2d layer `name`: `build(layer, phi)` returns the replacement.
template <typename Scalar, typename Build>
morph_report morph_conv(model<Scalar>& m, const std::string& name, const char* who,
                        std::uint64_t seed, const probe_options& probe,
                        const std::optional<activation_fn>& phi, Build&& build) {
  const layer_slot<Scalar> slot = m.locate(name);
  const auto* c = layer_cast<conv2d>(&slot.get());
  if (!c) wrong_kind(who, slot.get(), "conv2d");
  const activation_fn derived = derive_phi(phi, following_activation(slot), who, name);
  return transact(m, name, who, seed, probe, [&] { return build(*c, derived); });
}

/// Velocities of the widened layers: rows (incoming side, batch norm) and column blocks (the
/// next layer's input) follow the channels' sources; a Net2Net replica's outgoing velocity is
/// divided like its weights; new channels start at zero.
class channel_carry {
 public:
  channel_carry(const std::vector<index_type>& source, index_type old_channels, bool divide)
      : source_(source), c_old_(old_channels), count_(std::size_t(old_channels), 0) {
    for (index_type s : source_)
      if (s >= 0) ++count_[static_cast<std::size_t>(s)];
    divide_ = divide;
  }
  template <typename Scalar>
  tensor<Scalar> rows(const tensor<Scalar>& old_v, const tensor<Scalar>& new_value) const {
    tensor<Scalar> v(new_value.shape());
    const index_type row = old_v.size() / std::max<index_type>(1, c_old_);
    for (std::size_t q = 0; q < source_.size(); ++q)
      if (source_[q] >= 0)
        std::copy(old_v.data() + source_[q] * row, old_v.data() + (source_[q] + 1) * row,
                  v.data() + static_cast<index_type>(q) * row);
    return v;
  }
  template <typename Scalar>
  tensor<Scalar> columns(const tensor<Scalar>& old_v, const tensor<Scalar>& new_value,
                         index_type groups) const {
    tensor<Scalar> v(new_value.shape());
    const index_type cn = static_cast<index_type>(source_.size());
    const index_type span = old_v.size() / std::max<index_type>(1, groups * c_old_);
    for (index_type g = 0; g < groups; ++g)
      for (index_type q = 0; q < cn; ++q) {
        const index_type s = source_[static_cast<std::size_t>(q)];
        if (s < 0) continue;
        const double f = divide_ ? 1.0 / double(count_[static_cast<std::size_t>(s)]) : 1.0;
        for (index_type t = 0; t < span; ++t)
          v.data()[(g * cn + q) * span + t] =
              static_cast<Scalar>(double(old_v.data()[(g * c_old_ + s) * span + t]) * f);
      }
    return v;
  }

 private:
  std::vector<index_type> source_;
  index_type c_old_;
  std::vector<index_type> count_;
  bool divide_ = false;
};

/// A conv2d or dense layer with the widened weights and carried velocities; `incoming` says
/// whether the layer's output channels grew (else its input columns did).
template <typename Scalar, typename Layer, typename Weights>
std::unique_ptr<layer<Scalar>> widened(const Layer& old, const Weights& w,
                                       const channel_carry& carry, bool incoming) {
  auto out = make_layer(w);
  auto* l = static_cast<Layer*>(out.get());
  const index_type groups = old.weight().value.dim(0);
  l->weight().velocity = incoming ? carry.rows(old.weight().velocity, w.weight)
                                  : carry.columns(old.weight().velocity, w.weight, groups);
  if (old.has_bias())
    l->bias().velocity =
        incoming ? carry.rows(old.bias().velocity, l->bias().value) : old.bias().velocity;
  return out;
}

}  // namespace detail

/// Depth morph of layer `target` (a name or a top-level index; conv2d or dense): it becomes `N.0`
/// (the first child), optionally an identity batch norm, a P-activation at a = 1 of the activation
/// that follows it, and the second child. See `netmorph::deepen` for the options and what it
/// throws. \throws value_error when the layer is not conv2d/dense, `opt.phi` disagrees with the
/// model or `opt.probe.size` is set (a model is probed at its input shape).
template <typename Scalar>
morph_report deepen(model<Scalar>& m, const layer_ref& target, const deepen_options& opt = {}) {
  const std::string name = target.name(m);
  const layer_slot<Scalar> slot = m.locate(name);
  layer<Scalar>& l = slot.get();
  if (l.kind() != layer_kind::conv2d && l.kind() != layer_kind::dense)
    detail::wrong_kind("nn::deepen", l, "conv2d or dense");
  deepen_options o = opt;
  o.phi = detail::derive_phi(opt.phi, detail::following_activation(slot), "nn::deepen", name);
  o.probe.count = 0;  // the whole model is measured instead
  return detail::transact(m, name, "nn::deepen", opt.seed, opt.probe, [&] {
    auto child = [&](const auto& r) {
      detail::replacement<Scalar> rep;
      rep.layers.push_back(detail::make_layer(r.first));
      if (r.batch_norm) rep.layers.push_back(std::make_unique<batch_norm<Scalar>>(*r.batch_norm));
      rep.layers.push_back(std::make_unique<p_activation<Scalar>>(r.between));
      rep.layers.push_back(detail::make_layer(r.second));
      rep.report = r.report;
      return rep;
    };
    if (const auto* c = layer_cast<conv2d>(&l)) return child(netmorph::deepen(c->weights(), o));
    return child(netmorph::deepen(layer_cast<dense>(&l)->weights(), o));
  });
}

/// Width morph of layer `target` (conv2d or dense) to `opt.new_channels` outputs. The layers up to
/// the next conv2d/dense layer in the same list may be activations, P-activations, one batch
/// norm (widened with it), dropout, pooling and one flatten (the dense layer after it gets `H*W`
/// columns per channel). Neither width rule depends on the activation in between; a `phi` set by
/// the caller is only checked against it (with several, against their value at zero).
/// \throws value_error when the layer is not conv2d/dense, two batch norms or another kind of
///         layer sit in between, no conv2d/dense layer follows in the same list, `opt.phi`
///         disagrees with the model, or `opt.probe.size` is set; and everything `netmorph::widen`
///         throws.
template <typename Scalar>
morph_report widen(model<Scalar>& m, const layer_ref& target, const widen_options& opt) {
  const std::string name = target.name(m);
  using netmorph::detail::require;
  const layer_slot<Scalar> slot = m.locate(name);
  const layer_list<Scalar>& list = *slot.list;
  const layer<Scalar>& l = slot.get();
  if (l.kind() != layer_kind::conv2d && l.kind() != layer_kind::dense)
    detail::wrong_kind("nn::widen", l, "conv2d or dense");
  // Walk to the next conv2d/dense layer, collecting what sits between.
  const std::size_t i = static_cast<std::size_t>(slot.position);
  std::size_t j = i + 1, bn_at = 0, acts = 0;
  bool flattened = false, nonzero_at_zero = false;
  for (; j < list.size(); ++j) {
    const layer<Scalar>* k = list[j].get();
    const layer_kind kind = k->kind();
    if (kind == layer_kind::conv2d || kind == layer_kind::dense) break;
    if (const auto* a = layer_cast<activation>(k)) {
      ++acts;
      nonzero_at_zero = nonzero_at_zero || !a->fn().zero_at_zero();
    } else if (const auto* p = layer_cast<p_activation>(k)) {
      acts += 2;  // never taken as the single activation: its a moves during training
      nonzero_at_zero = nonzero_at_zero || p->fn().value(0.0) != 0.0;
    } else if (kind == layer_kind::batch_norm) {
      require<value_error>(bn_at == 0, "nn::widen: two batch norms between layer '", name,
                           "' and the next conv2d/dense layer");
      bn_at = j;
    } else if (kind == layer_kind::flatten) {
      flattened = true;
    } else if (kind != layer_kind::dropout && kind != layer_kind::pool2d &&
               kind != layer_kind::adaptive_pool2d) {
      require<value_error>(false, "nn::widen: layer '", k->name(), "' (", k->describe(),
                           ") between layer '", name,
                           "' and the next conv2d/dense layer cannot be widened through");
    }
  }
  require<value_error>(j < list.size(), "nn::widen: layer '", name,
                       "' has no following conv2d/dense layer in its list whose input could grow");
  const layer<Scalar>& nx = *list[j];
  // Only a flatten changes the rank, and the model's shapes were checked when it was built: a
  // dense layer never feeds a conv2d, and a conv2d feeds a dense layer only through a flatten.
  NETMORPH_ASSERT(!(l.kind() == layer_kind::dense && nx.kind() == layer_kind::conv2d));
  NETMORPH_ASSERT(!(l.kind() == layer_kind::conv2d && nx.kind() == layer_kind::dense) || flattened);
  // The weight-level rules do not depend on the activation, and the weight-level probes are off:
  // phi is derived only to check a caller's phi against the model (the one activation in
  // between, the identity when there is none, and with several, or a P-activation whose a moves
  // in training, a stand-in with the same value at zero).
  std::optional<activation_fn> determined;
  if (acts == 0) determined = activation_fn{activation_kind::identity};
  if (acts == 1) determined = detail::following_activation(slot);
  widen_options o = opt;
  if (determined) {
    o.phi = detail::derive_phi(opt.phi, determined, "nn::widen", name);
  } else {
    o.phi = activation_fn{nonzero_at_zero ? activation_kind::sigmoid : activation_kind::identity};
    require<value_error>(!opt.phi || opt.phi->zero_at_zero() == !nonzero_at_zero,
                         "nn::widen: options.phi ",
                         opt.phi ? detail::describe_activation(*opt.phi) : std::string(),
                         " disagrees with the activations after layer '", name,
                         "'; leave phi unset, the model determines it");
  }
  o.probe.count = 0;  // the whole model is measured instead
  const batch_norm<Scalar>* bnl = bn_at ? layer_cast<batch_norm>(list[bn_at].get()) : nullptr;
  std::optional<batch_norm_weights<Scalar>> bn;
  if (bnl) bn = bnl->weights();

  return detail::transact(m, name, "nn::widen", opt.seed, opt.probe, [&] {
    auto build = [&](const auto& lay, const auto& next) {
      auto r = netmorph::widen(lay.weights(), next.weights(), o, bn);
      const detail::channel_carry carry(r.source, lay.weight().value.dim(0),
                                        opt.rule == width_rule::net2net);
      detail::replacement<Scalar> rep;
      rep.count = static_cast<index_type>(j - i + 1);
      rep.layers.push_back(detail::widened<Scalar>(lay, r.layer, carry, true));
      for (std::size_t k = i + 1; k < j; ++k) {
        if (k != bn_at) {
          rep.layers.push_back(list[k]->clone());
          continue;
        }
        auto nb = std::make_unique<batch_norm<Scalar>>(*r.batch_norm, bnl->momentum());
        nb->gamma().velocity = carry.rows(bnl->gamma().velocity, nb->gamma().value);
        nb->beta().velocity = carry.rows(bnl->beta().velocity, nb->beta().value);
        rep.layers.push_back(std::move(nb));
      }
      rep.layers.push_back(detail::widened<Scalar>(next, r.next, carry, false));
      rep.changed = {0, rep.layers.size() - 1};
      if (bn_at) rep.changed.push_back(bn_at - i);
      rep.report = r.report;
      return rep;
    };
    const auto* lc = layer_cast<conv2d>(&l);
    const auto* ld = layer_cast<dense>(&l);
    const auto* nc = layer_cast<conv2d>(&nx);
    const auto* nd = layer_cast<dense>(&nx);
    if (lc && nc) return build(*lc, *nc);
    if (lc) return build(*lc, *nd);
    return build(*ld, *nd);
  });
}

/// Kernel-size morph of conv2d layer `target` to `opt.new_kernel` (its velocity zero-padded
/// likewise). \throws value_error when the layer is not conv2d or `opt.probe.size` is set; what
/// `netmorph::grow_kernel` throws.
template <typename Scalar>
morph_report grow_kernel(model<Scalar>& m, const layer_ref& target,
                         const grow_kernel_options& opt) {
  const std::string name = target.name(m);
  grow_kernel_options o = opt;
  o.probe.count = 0;
  return detail::morph_conv(m, name, "nn::grow_kernel", opt.seed, opt.probe, std::nullopt,
                            [&](const conv2d<Scalar>& c, const activation_fn&) {
                              auto r = netmorph::grow_kernel(c.weights(), o);
                              detail::replacement<Scalar> rep;
                              auto grown = detail::make_layer(r.layer);
                              auto* g = static_cast<conv2d<Scalar>*>(grown.get());
                              g->weight().velocity =
                                  pad_kernel(c.weight().velocity, o.new_kernel, o.new_kernel);
                              if (c.has_bias()) g->bias().velocity = c.bias().velocity;
                              rep.layers.push_back(std::move(grown));
                              rep.report = r.report;
                              return rep;
                            });
}

/// Sequential-subnet morph of conv2d layer `target` (`N`) into `N.0`, `N.1`, ...: the subnet's
/// layers with P-activations at a = 1 between them. `opt.step.seed` seeds it and the probes.
/// \throws value_error when the layer is not conv2d, `opt.step.phi` disagrees with the model or
///         `opt.step.probe.size` is set; what `netmorph::to_subnet` throws (numerical_error when
///         the chain misses its tolerance).
template <typename Scalar>
morph_report to_subnet(model<Scalar>& m, const layer_ref& target, const subnet_options& opt) {
  const std::string name = target.name(m);
  subnet_options o = opt;
  o.step.probe.count = 0;
  return detail::morph_conv(m, name, "nn::to_subnet", opt.step.seed, opt.step.probe, opt.step.phi,
                            [&](const conv2d<Scalar>& c, const activation_fn& phi) {
                              o.step.phi = phi;
                              auto r = netmorph::to_subnet(c.weights(), o);
                              detail::replacement<Scalar> rep;
                              rep.layers = detail::chain_layers(r.chain);
                              rep.report = r.report;
                              return rep;
                            });
}

/// n-way stacked-subnet morph of conv2d layer `target`: a parallel block `N` whose path `i` is a
/// sequential subnet `N.path<i>.0`, `N.path<i>.1`, ...; the paths' outputs are summed.
/// \throws value_error when the layer is not conv2d, a path's `step.phi` disagrees with the model
///         or `opt.probe.size` is set; what `netmorph::to_stacked_subnet` throws.
template <typename Scalar>
morph_report to_stacked_subnet(model<Scalar>& m, const layer_ref& target,
                               const stacked_subnet_options& opt) {
  const std::string name = target.name(m);
  stacked_subnet_options o = opt;
  o.probe.count = 0;
  std::optional<activation_fn> set;
  for (const auto& p : opt.paths)
    if (p.step.phi) set = p.step.phi;
  return detail::morph_conv(
      m, name, "nn::to_stacked_subnet", opt.seed, opt.probe, set,
      [&](const conv2d<Scalar>& c, const activation_fn& phi) {
        for (auto& p : o.paths) {
          detail::derive_phi(p.step.phi, phi, "nn::to_stacked_subnet", name);
          p.step.phi = phi;
        }
        auto r = netmorph::to_stacked_subnet(c.weights(), o);
        std::vector<layer_list<Scalar>> paths;
        for (const auto& chain : r.paths)
          paths.push_back(detail::chain_layers(chain));
        detail::replacement<Scalar> rep;
        rep.layers.push_back(std::make_unique<parallel<Scalar>>(std::move(paths)));
        rep.report = r.report;
        return rep;
      });
}

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_MORPH_HPP

#ifndef NETMORPH_NN_MORPH_HPP
#define NETMORPH_NN_MORPH_HPP

/// \file morph.hpp
/// Morph operations on a whole model, addressed by layer name (or top-level index). Each is a
/// transaction: it probes the parent, builds the replacement layers on the side with the
/// weight-level morph, swaps them in (`model::replace` checks the new model's shapes and
/// restores the old layers when they do not fit), and only then measures the whole model's
/// function preservation on probe inputs in inference mode; when that measurement fails (an
/// exception of any kind, `std::bad_alloc` included) `model::restore` puts the parent's layers
/// back. A morph that throws leaves the model, its optimizer state and its buffers exactly as they
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
/// Neighbours are kept consistent: `widen` grows the layer's whole channel group (`channels.hpp`:
/// the layers summed with it in parallel blocks, the batch norms and depthwise filters the
/// channels flow through, the inputs of the conv2d/dense layers that read them, `H*W` columns per
/// channel after a flatten).
/// The optimizer state (SGD velocities, Adam's moments and step counts) is carried over by one
/// rule (docs/DESIGN.md §8.4): unchanged parameters keep theirs bit for bit; grown ones carry it
/// to where their channels and taps went, following the gradient; new parameters start at zero.
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
#include <netmorph/nn/channels.hpp>
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
  /// Instead of the above: layers swapped one by one under their names (`model::replace_each`),
  /// all of them new or changed.
  std::vector<std::pair<std::string, std::unique_ptr<layer<Scalar>>>> each;
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
  for (const auto& e : r.each)
    added.push_back(e.second.get());
  morph_report rep = std::move(r.report);
  rep.layer = name;
  rep.new_layers.clear();
  rep.new_layers.reserve(added.size());
  auto undo = r.each.empty() ? m.replace(name, r.count, std::move(r.layers))
                             : m.replace_each(std::move(r.each));
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

/// The plan of a width morph on a channel group (docs/DESIGN.md §8.5): for each new channel
/// position, the old channel it carries (-1: a new NetMorph channel), and how many positions
/// carry each old channel (Net2Net divides the consumers' columns by it).
struct channel_plan {
  std::vector<index_type> source;
  std::vector<index_type> count;
  width_rule rule = width_rule::netmorph;
  double noise = 1.0;

  channel_plan(index_type c, const widen_options& opt, std::mt19937_64& rng)
      : count(static_cast<std::size_t>(c), 0), rule(opt.rule), noise(opt.noise) {
    const index_type cn = opt.new_channels;
    std::vector<index_type> src(static_cast<std::size_t>(cn));
    std::uniform_int_distribution<index_type> pick(0, c - 1);
    for (index_type q = 0; q < cn; ++q)
      src[static_cast<std::size_t>(q)] =
          q < c ? q : (rule == width_rule::net2net ? pick(rng) : index_type(-1));
    const std::vector<index_type> perm =
        netmorph::detail::channel_permutation(cn, opt.permute, rng);
    source.resize(static_cast<std::size_t>(cn));
    for (index_type p = 0; p < cn; ++p) {
      const index_type s = src[static_cast<std::size_t>(perm[static_cast<std::size_t>(p)])];
      source[static_cast<std::size_t>(p)] = s;
      if (s >= 0) ++count[static_cast<std::size_t>(s)];
    }
  }
  index_type old_channels() const { return static_cast<index_type>(count.size()); }
  index_type new_channels() const { return static_cast<index_type>(source.size()); }

  /// `t` with the group's block of its leading axis replaced: `entries` entries per channel from
  /// entry `offset` (one per filter row; `H W` for a batch norm or dense layer over the features
  /// of a flatten). New channel `p`'s entries are old channel `source[p]`'s divided by its number
  /// of copies to the power `power` (0: copied; optimizer state follows the gradient, §8.4), or
  /// `fill(values, n)` fills them for a new NetMorph channel; the entries before and after the
  /// block are kept.
  template <typename Scalar, typename Fill>
  tensor<Scalar> rows(const tensor<Scalar>& t, Fill&& fill, index_type offset = 0,
                      index_type entries = 1, int power = 0) const {
    shape_type s = t.shape();
    const index_type c = old_channels(), cn = new_channels();
    const index_type inner = t.size() / std::max<index_type>(1, s[0]), block = entries * inner;
    NETMORPH_ASSERT(offset >= 0 && offset + c * entries <= s[0]);
    s[0] += (cn - c) * entries;
    tensor<Scalar> out(s);
    const Scalar* from = t.data() + offset * inner;
    Scalar* to = std::copy(t.data(), from, out.data());
    for (index_type p = 0; p < cn; ++p, to += block) {
      const index_type src = source[static_cast<std::size_t>(p)];
      if (src < 0) {
        fill(to, block);
        continue;
      }
      const double div = std::pow(double(count[static_cast<std::size_t>(src)]), power);
      const Scalar* f = from + src * block;
      for (index_type k = 0; k < block; ++k)
        to[k] = div == 1.0 ? f[k] : static_cast<Scalar>(double(f[k]) / div);
    }
    std::copy(from + c * block, t.data() + t.size(), to);
    return out;
  }
  /// `t` (a weight with the input axis 1: dense `(O, F)` or conv `(O, C, K_h, K_w)`) with the
  /// group's block of that axis replaced: `entries` entries per channel from entry `offset`.
  /// New channel `p`'s block in every row is old block `source[p]` divided by the number of its
  /// copies to the power `power` (1 for weights, 0 for optimizer state: copied), or zero for a
  /// new channel; the entries before and after the block are kept.
  template <typename Scalar>
  tensor<Scalar> columns(const tensor<Scalar>& t, index_type offset = 0, index_type entries = 1,
                         int power = 1) const {
    shape_type s = t.shape();
    const index_type c = old_channels(), cn = new_channels(), o = s[0];
    const index_type row = t.size() / std::max<index_type>(1, o);
    const index_type inner = row / std::max<index_type>(1, s[1]), block = entries * inner;
    NETMORPH_ASSERT(offset >= 0 && offset + c * entries <= s[1]);
    s[1] += (cn - c) * entries;
    tensor<Scalar> out(s);
    const index_type new_row = out.size() / std::max<index_type>(1, o);
    for (index_type r = 0; r < o; ++r) {
      const Scalar* from = t.data() + r * row + offset * inner;
      Scalar* to = std::copy(t.data() + r * row, from, out.data() + r * new_row);
      for (index_type p = 0; p < cn; ++p, to += block) {
        const index_type src = source[static_cast<std::size_t>(p)];
        if (src < 0) continue;  // zero: the tensor starts zeroed
        const double div = std::pow(double(count[static_cast<std::size_t>(src)]), power);
        const Scalar* f = from + src * block;
        for (index_type k = 0; k < block; ++k)
          to[k] = div == 1.0 ? f[k] : static_cast<Scalar>(double(f[k]) / div);
      }
      std::copy(from + c * block, t.data() + (r + 1) * row, to);
    }
    return out;
  }
};

/// A filler of new rows: the NetMorph rule's random values of `noise` times the spread of the
/// existing ones (a fan-in scale where they have none, docs/DESIGN.md §4.1).
template <typename Scalar>
auto random_rows(const tensor<Scalar>& old, index_type fan_in, double noise, std::mt19937_64& rng) {
  const double spread = stddev(old);
  const double sd = noise * (spread > 0 && std::isfinite(spread)
                                 ? spread
                                 : 1.0 / std::sqrt(double(std::max<index_type>(1, fan_in))));
  return [sd, &rng](Scalar* o, index_type n) {
    std::normal_distribution<double> normal(0.0, 1.0);
    for (index_type k = 0; k < n; ++k)
      o[k] = static_cast<Scalar>(sd * normal(rng));
  };
}
/// As `random_rows` for a bias (no fallback: a zero bias stays zero in new channels).
template <typename Scalar>
auto random_bias(const tensor<Scalar>& old, double noise, std::mt19937_64& rng) {
  const double sd = old.empty() ? 0.0 : noise * stddev(old);
  return [sd, &rng](Scalar* o, index_type n) {
    std::normal_distribution<double> normal(0.0, 1.0);
    for (index_type k = 0; k < n; ++k)
      o[k] = static_cast<Scalar>(sd * normal(rng));
  };
}
/// A filler of new rows with a constant (zero optimizer state, an identity batch norm).
template <typename Scalar>
auto constant_rows(double v) {
  return [v](Scalar* o, index_type n) { std::fill(o, o + n, static_cast<Scalar>(v)); };
}

/// Where a layer holds a channel group: blocks of `entries` entries per channel from `offset`
/// on its input axis (`reads`, a consumer) and on its output axis (`writes`: a producer, a batch
/// norm, a depthwise filter), in decreasing offset so that growing one keeps the others' places.
struct channel_blocks {
  std::vector<std::pair<index_type, index_type>> reads, writes;  // (offset, entries)
};

/// One layer of a channel group, widened: columns first where it reads the group, then rows
/// where it writes it (a convolution inside a residual path does both), with its optimizer
/// state. The state follows the gradient (docs/DESIGN.md §8.4): new NetMorph channels start at
/// zero; a Net2Net replica's gradient is its source's divided by the `n` copies in the rows it
/// writes and equal in the columns it reads, so its state is divided by `n` (first moments) or
/// `n^2` (second moments) in rows and copied in columns.
template <typename Scalar>
std::unique_ptr<layer<Scalar>> widened_member(const layer<Scalar>& l, const channel_blocks& at,
                                              const channel_plan& plan, std::mt19937_64& rng,
                                              morph_report& rep) {
  const bool netmorph_rule = plan.rule == width_rule::netmorph;
  const auto grow_value = [&](const parameter<Scalar>& p, bool is_bias, index_type fan_in) {
    tensor<Scalar> value = p.value;
    if (!is_bias)
      for (const auto& b : at.reads)
        value = plan.columns(value, b.first, b.second);
    for (const auto& b : at.writes) {
      if (netmorph_rule)
        value = is_bias ? plan.rows(value, random_bias(p.value, plan.noise, rng), b.first, b.second)
                        : plan.rows(value, random_rows(p.value, fan_in, plan.noise, rng), b.first,
                                    b.second);
      else  // Net2Net: every row has a source
        value = plan.rows(value, constant_rows<Scalar>(0), b.first, b.second);
    }
    return value;
  };
  const auto grow_state = [&](bool is_bias) {
    return [&at, &plan, is_bias](const tensor<Scalar>& state, state_order order) {
      tensor<Scalar> t = state;
      if (!is_bias)
        for (const auto& b : at.reads)
          t = plan.columns(t, b.first, b.second, 0);
      for (const auto& b : at.writes)
        t = plan.rows(t, constant_rows<Scalar>(0), b.first, b.second, static_cast<int>(order));
      return t;
    };
  };
  const auto summarize = [&](const char* what, const tensor<Scalar>& t) {
    rep.new_tensors.push_back(netmorph::detail::summarize(cat(l.name(), ".", what), t));
  };
  if (const auto* c = layer_cast<conv2d>(&l)) {
    tensor<Scalar> w =
        grow_value(c->weight(), false, c->weight().value.size() / c->weight().value.dim(0));
    tensor<Scalar> b = c->has_bias() ? grow_value(c->bias(), true, 0) : tensor<Scalar>();
    conv2d_options o = c->options();
    if (o.groups > 1) o.groups = w.dim(0);  // a depthwise layer: one group per channel
    auto out = std::make_unique<conv2d<Scalar>>(w, b, o);
    carry_state(c->weight(), out->weight(), grow_state(false));
    if (c->has_bias()) carry_state(c->bias(), out->bias(), grow_state(true));
    summarize("weight", out->weight().value);
    if (c->has_bias()) summarize("bias", out->bias().value);
    return out;
  }
  if (const auto* d = layer_cast<dense>(&l)) {
    tensor<Scalar> w = grow_value(d->weight(), false, d->weight().value.dim(1));
    tensor<Scalar> b = d->has_bias() ? grow_value(d->bias(), true, 0) : tensor<Scalar>();
    auto out = std::make_unique<dense<Scalar>>(w, b);
    carry_state(d->weight(), out->weight(), grow_state(false));
    if (d->has_bias()) carry_state(d->bias(), out->bias(), grow_state(true));
    summarize("weight", out->weight().value);
    if (d->has_bias()) summarize("bias", out->bias().value);
    return out;
  }
  const auto* bn = layer_cast<batch_norm>(&l);
  NETMORPH_ASSERT(bn != nullptr);
  // A new channel's batch norm is the identity in inference mode (gamma 1, beta 0, mean 0,
  // variance 1); a Net2Net replica copies its source's.
  batch_norm_weights<Scalar> w = bn->weights();
  for (const auto& b : at.writes) {
    w.gamma = plan.rows(w.gamma, constant_rows<Scalar>(1), b.first, b.second);
    w.beta = plan.rows(w.beta, constant_rows<Scalar>(0), b.first, b.second);
    w.running_mean = plan.rows(w.running_mean, constant_rows<Scalar>(0), b.first, b.second);
    w.running_var = plan.rows(w.running_var, constant_rows<Scalar>(1), b.first, b.second);
  }
  auto out = std::make_unique<batch_norm<Scalar>>(w, bn->momentum());
  carry_state(bn->gamma(), out->gamma(), grow_state(true));
  carry_state(bn->beta(), out->beta(), grow_state(true));
  summarize("weight", out->gamma().value);
  summarize("bias", out->beta().value);
  summarize("running_mean", out->running_mean());
  summarize("running_var", out->running_var());
  return out;
}

/// The activation check of `nn::widen`: the model determines what follows the layer in its list
/// (up to the next conv2d/dense layer); a `phi` set by the caller must agree with it. Neither
/// width rule depends on it.
template <typename Scalar>
void check_widen_phi(const layer_slot<Scalar>& slot, const widen_options& opt,
                     const std::string& name) {
  if (!opt.phi) return;
  const layer_list<Scalar>& list = *slot.list;
  std::size_t acts = 0;
  bool nonzero_at_zero = false;
  for (std::size_t j = static_cast<std::size_t>(slot.position) + 1; j < list.size(); ++j) {
    const layer<Scalar>* k = list[j].get();
    if (k->kind() == layer_kind::conv2d || k->kind() == layer_kind::dense) break;
    if (const auto* a = layer_cast<activation>(k)) {
      ++acts;
      nonzero_at_zero = nonzero_at_zero || !a->fn().zero_at_zero();
    } else if (const auto* p = layer_cast<p_activation>(k)) {
      acts += 2;  // never taken as the single activation: its a moves during training
      nonzero_at_zero = nonzero_at_zero || p->fn().value(0.0) != 0.0;
    }
  }
  if (acts <= 1) {
    derive_phi(opt.phi,
               acts == 0 ? std::optional<activation_fn>(activation_fn{activation_kind::identity})
                         : following_activation(slot),
               "nn::widen", name);
    return;
  }
  // With several activations, or a P-activation whose a moves in training, only the value at
  // zero is compared.
  require<value_error>(opt.phi->zero_at_zero() == !nonzero_at_zero, "nn::widen: options.phi ",
                       describe_activation(*opt.phi),
                       " disagrees with the activations after layer '", name,
                       "'; leave phi unset, the model determines it");
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

/// Width morph of layer `target` (conv2d or dense, a depthwise convolution included) to
/// `opt.new_channels` output channels, on its whole channel group (`channel_group_of`,
/// docs/DESIGN.md §8.5): every producer of the group (the layer, and the other layers whose
/// outputs are summed with its own in parallel blocks: a residual stream grows as one) gets new
/// rows, every batch norm and depthwise filter the channels flow through new channels, and every
/// consumer (conv2d or dense) new input columns (`H*W` per channel after a flatten). NetMorph
/// rule: new rows random (each producer's own spread), new columns zero; Net2Net: every new
/// channel replicates one old channel in every layer of the group, and the consumers' columns
/// of each old channel and its copies are divided by their number. Exact for any activations.
/// Velocities move with the channels (new ones start at zero, Net2Net's divided like the
/// weights). The report lists every tensor that changed; `new_layers` every changed layer.
/// \throws value_error when the layer is not conv2d/dense, the group reaches the model's input or
///         output, a grouped (not depthwise) convolution reads or writes it, the width shrinks,
///         `opt.phi` disagrees with the model, or an option is out of range.
template <typename Scalar>
morph_report widen(model<Scalar>& m, const layer_ref& target, const widen_options& opt) {
  const std::string name = target.name(m);
  using netmorph::detail::cat;
  using netmorph::detail::require;
  const layer_slot<Scalar> slot = m.locate(name);
  const layer<Scalar>& l = slot.get();
  if (l.kind() != layer_kind::conv2d && l.kind() != layer_kind::dense)
    detail::wrong_kind("nn::widen", l, "conv2d or dense");
  const channel_group group = channel_group_of(m, name, "nn::widen");
  const index_type c = group.channels, cn = opt.new_channels;
  require<value_error>(cn >= c, "widen: cannot shrink from ", c, " to ", cn, " channels");
  require<value_error>(opt.noise >= 0 && std::isfinite(opt.noise),
                       "widen: noise must be >= 0 and finite, got ", opt.noise);
  detail::check_widen_phi(slot, opt, name);
  // Every layer of the group once, in model order, with where it holds the channels.
  std::vector<std::pair<std::string, detail::channel_blocks>> members;
  for (const channel_member& mb : group.members) {
    if (members.empty() || members.back().first != mb.layer)
      members.emplace_back(mb.layer, detail::channel_blocks{});
    detail::channel_blocks& at = members.back().second;
    (mb.role == channel_role::consumer ? at.reads : at.writes).emplace_back(mb.offset, mb.entries);
  }
  for (auto& me : members) {
    for (auto* blocks : {&me.second.reads, &me.second.writes})
      std::sort(blocks->rbegin(), blocks->rend());
    const layer<Scalar>& ml = m.find(me.first);
    for (const parameter<Scalar>* p : const_cast<layer<Scalar>&>(ml).parameters()) {
      require_finite(p->value, "widen", cat("'", me.first, "' ", p->name).c_str());
      shape_type s = p->value.shape();
      for (const auto& b : me.second.writes)
        s[0] += (cn - c) * b.second;
      if (s.size() > 1)
        for (const auto& b : me.second.reads)
          s[1] += (cn - c) * b.second;
      netmorph::detail::require_allocatable("widen", cat("the widened '", me.first, "'"), s,
                                            sizeof(Scalar));
    }
  }
  return detail::transact(m, name, "nn::widen", opt.seed, opt.probe, [&] {
    std::mt19937_64 rng(opt.seed);
    const detail::channel_plan plan(c, opt, rng);
    detail::replacement<Scalar> rep;
    morph_report& r = rep.report;
    r.operation = "widen";
    r.algorithm = to_string(opt.rule);
    r.exact = true;  // both rules are exact by construction, for any activations
    r.width = width_details{c, cn};
    for (const auto& me : members)
      rep.each.emplace_back(me.first,
                            detail::widened_member(m.find(me.first), me.second, plan, rng, r));
    if (members.size() > 3)
      r.notes.push_back(
          cat("The channel group of layer '", name, "' spans ", members.size(), " layers."));
    return rep;
  });
}

/// Kernel-size morph of conv2d layer `target` to `opt.new_kernel` (its optimizer state
/// zero-padded likewise, the bias's kept). \throws value_error when the layer is not conv2d or
/// `opt.probe.size` is set; what `netmorph::grow_kernel` throws.
template <typename Scalar>
morph_report grow_kernel(model<Scalar>& m, const layer_ref& target,
                         const grow_kernel_options& opt) {
  const std::string name = target.name(m);
  grow_kernel_options o = opt;
  o.probe.count = 0;
  return detail::morph_conv(
      m, name, "nn::grow_kernel", opt.seed, opt.probe, std::nullopt,
      [&](const conv2d<Scalar>& c, const activation_fn&) {
        auto r = netmorph::grow_kernel(c.weights(), o);
        detail::replacement<Scalar> rep;
        auto grown = detail::make_layer(r.layer);
        auto* g = static_cast<conv2d<Scalar>*>(grown.get());
        carry_state(c.weight(), g->weight(), [&](const tensor<Scalar>& t, state_order) {
          return pad_kernel(t, o.new_kernel, o.new_kernel);
        });
        if (c.has_bias())
          carry_state(c.bias(), g->bias(), [](const tensor<Scalar>& t, state_order) { return t; });
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

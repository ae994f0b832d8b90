#ifndef NETMORPH_NN_CHANNELS_HPP
#define NETMORPH_NN_CHANNELS_HPP

/// \file channels.hpp
/// Coupled channels (docs/DESIGN.md §8.5): the layers whose tensors change size together when the
/// output channels of one layer grow. Channels flow unchanged through activations, batch norm,
/// dropout, pooling, flatten and depthwise convolutions; the paths of a parallel block are summed,
/// so every path's output, the block's input (through an identity path) and its output carry the
/// same channels. A convolution (`groups = 1`) or dense layer ends the flow: its input columns
/// grow (a consumer) and its output rows start a new channel space (a producer).

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers.hpp>
#include <netmorph/nn/model.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// How a layer holds the channels of a group.
enum class channel_role {
  producer,  ///< its output channels: rows of the weight and the bias
  through,   ///< per-channel tensors the channels flow through (batch norm, a depthwise filter)
  consumer   ///< its input channels: blocks of `span` columns in every row of the weight
};

/// "producer", "through" or "consumer".
inline const char* to_string(channel_role r) {
  switch (r) {
    case channel_role::producer:
      return "producer";
    case channel_role::through:
      return "through";
    case channel_role::consumer:
      return "consumer";
  }
  return "unknown";  // not reached: every role is listed, and -Wswitch names a forgotten one
}

/// One layer of a channel group.
struct channel_member {
  std::string layer;
  channel_role role = channel_role::producer;
  /// Values each channel owns: a producer's incoming filter, a through layer's per-channel
  /// values (1 for batch norm, `K_h K_w` for a depthwise filter), and in each output row of a
  /// consumer `K_h K_w` (a convolution), `H W` (a dense layer after a flatten) or 1.
  index_type span = 0;
};

/// The layers whose tensors grow together with a layer's output channels.
struct channel_group {
  index_type channels = 0;  ///< the group's channel count
  /// In model order (depth first); a layer that reads and writes the group (a convolution inside
  /// a residual path) is listed as a consumer, then as a producer.
  std::vector<channel_member> members;
};

namespace detail {

/// The channel spaces of a model: each layer's input and output space, joined where channels
/// flow unchanged or are summed (a union-find over space ids).
template <typename Scalar>
struct channel_walk {
  enum class kind { mixing, through, grouped };
  struct use {
    const layer<Scalar>* l;
    kind k;
    int in, out;
  };
  std::vector<int> parent;
  std::vector<use> uses;

  int fresh() {
    parent.push_back(static_cast<int>(parent.size()));
    return parent.back();
  }
  int find(int a) {
    while (parent[static_cast<std::size_t>(a)] != a)
      a = parent[static_cast<std::size_t>(a)] =
          parent[static_cast<std::size_t>(parent[static_cast<std::size_t>(a)])];
    return a;
  }
  void unite(int a, int b) { parent[static_cast<std::size_t>(find(a))] = find(b); }

  /// Walks `list` from the space `in`; returns the space after it.
  int walk(const layer_list<Scalar>& list, int in) {
    int cur = in;
    for (const auto& p : list) {
      const layer<Scalar>* l = p.get();
      switch (l->kind()) {
        case layer_kind::conv2d: {
          const auto* c = static_cast<const conv2d<Scalar>*>(l);
          const bool depthwise = c->groups() > 1 && c->groups() == c->in_channels() &&
                                 c->weight().value.dim(0) == c->in_channels();
          if (depthwise) {
            uses.push_back({l, kind::through, cur, cur});
          } else {
            const int out = fresh();
            uses.push_back({l, c->groups() == 1 ? kind::mixing : kind::grouped, cur, out});
            cur = out;
          }
          break;
        }
        case layer_kind::dense: {
          const int out = fresh();
          uses.push_back({l, kind::mixing, cur, out});
          cur = out;
          break;
        }
        case layer_kind::batch_norm:
          uses.push_back({l, kind::through, cur, cur});
          break;
        case layer_kind::parallel: {
          int out = -1;
          for (const auto& path : static_cast<const parallel<Scalar>*>(l)->paths()) {
            const int o = walk(path, cur);
            if (out < 0)
              out = o;
            else
              unite(o, out);
          }
          cur = out;
          break;
        }
        case layer_kind::pool2d:
        case layer_kind::adaptive_pool2d:
        case layer_kind::flatten:
        case layer_kind::dropout:
        case layer_kind::activation:
        case layer_kind::p_activation:
          break;  // channels pass unchanged (a flatten gives each H*W consecutive features)
      }
    }
    return cur;
  }
};

}  // namespace detail

/// The channel group of layer `name`'s output channels: every layer whose tensors grow when they
/// do (docs/DESIGN.md §8.5). `who` prefixes the messages.
/// \throws value_error when the layer is not conv2d/dense, when the group reaches the model's
///         input or output (they cannot grow), or when a grouped convolution other than a
///         depthwise one reads or writes the group (it mixes channels in groups).
template <typename Scalar>
channel_group channel_group_of(const model<Scalar>& m, const std::string& name,
                               const char* who = "nn::channel_group_of") {
  using netmorph::detail::require;
  detail::channel_walk<Scalar> w;
  const int input = w.fresh();
  const int output = w.walk(m.layers(), input);
  const typename detail::channel_walk<Scalar>::use* target = nullptr;
  for (const auto& u : w.uses)
    if (u.l->name() == name) target = &u;
  using kind = typename detail::channel_walk<Scalar>::kind;
  if (!target ||
      (target->l->kind() != layer_kind::conv2d && target->l->kind() != layer_kind::dense)) {
    const auto names = m.names();
    require<value_error>(std::find(names.begin(), names.end(), name) != names.end(), who,
                         ": no layer named '", name, "'");
    throw value_error(netmorph::detail::cat(who, ": layer '", name,
                                            "' is not conv2d or dense; its channels are not "
                                            "made here"));
  }
  require<value_error>(target->k != kind::grouped, who, ": layer '", name, "' (",
                       target->l->describe(),
                       ") mixes channels in groups; widening a grouped convolution other than a "
                       "depthwise one is not supported");
  const int g = w.find(target->out);
  require<value_error>(w.find(input) != g, who, ": the output channels of layer '", name,
                       "' are summed with the model's input (an identity path from it), which "
                       "cannot grow");
  require<value_error>(w.find(output) != g, who, ": layer '", name,
                       "' has no conv2d/dense layer after it whose input could grow: its channels "
                       "reach the model's output");
  channel_group out;
  for (const auto& u : w.uses) {
    const bool reads = w.find(u.in) == g, writes = w.find(u.out) == g;
    if (!reads && !writes) continue;
    require<value_error>(u.k != kind::grouped, who, ": layer '", u.l->name(), "' (",
                         u.l->describe(), ") ", reads ? "reads" : "writes",
                         " the channels of layer '", name,
                         "' and mixes them in groups: widening through a grouped convolution "
                         "other than a depthwise one is not supported");
    const tensor<Scalar>* weight = nullptr;
    if (const auto* c = layer_cast<conv2d>(u.l)) weight = &c->weight().value;
    if (const auto* d = layer_cast<dense>(u.l)) weight = &d->weight().value;
    if (u.k == kind::through) {
      out.members.push_back(
          {u.l->name(), channel_role::through, weight ? weight->size() / weight->dim(0) : 1});
      continue;
    }
    if (reads) {
      const index_type c_in = weight->size() / weight->dim(0);
      out.members.push_back({u.l->name(), channel_role::consumer, 0});
      out.members.back().span = c_in;  // values per row; divided by the group's channels below
    }
    if (writes) {
      out.members.push_back({u.l->name(), channel_role::producer, weight->size() / weight->dim(0)});
      if (u.l == target->l) out.channels = weight->dim(0);
    }
  }
  if (target->k == kind::through) {  // a depthwise target: its channels are its filters
    const auto* c = static_cast<const conv2d<Scalar>*>(target->l);
    out.channels = c->weight().value.dim(0);
  }
  // Every layer that holds the channels as its leading axis holds a whole number of entries per
  // channel: one, or H*W after a flatten. The target must be one that holds one (a layer that
  // writes a flattened stream makes features, not channels).
  for (const auto& u : w.uses) {
    if (w.find(u.out) != g) continue;
    index_type lead = 0;
    if (const auto* c = layer_cast<conv2d>(u.l)) lead = c->weight().value.dim(0);
    if (const auto* d = layer_cast<dense>(u.l)) lead = d->weight().value.dim(0);
    if (const auto* b = layer_cast<batch_norm>(u.l)) lead = b->gamma().value.size();
    require<value_error>(lead >= out.channels && lead % out.channels == 0, who, ": layer '",
                         u.l->name(), "' holds ", lead, " entries of the channels of layer '", name,
                         "' (", out.channels,
                         (lead < out.channels ? "); they are the features of a flatten: widen "
                                                "the layer that makes the channels before it"
                                              : "), not a whole number per channel"));
  }
  for (channel_member& mb : out.members)
    if (mb.role == channel_role::consumer) {
      require<value_error>(out.channels > 0 && mb.span % out.channels == 0, who, ": layer '",
                           mb.layer, "' has ", mb.span,
                           " input values per row, not a multiple of the group's ", out.channels,
                           " channels");
      mb.span /= out.channels;
    }
  return out;
}

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_CHANNELS_HPP

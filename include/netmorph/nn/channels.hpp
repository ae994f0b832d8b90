#ifndef NETMORPH_NN_CHANNELS_HPP
#define NETMORPH_NN_CHANNELS_HPP

/// \file channels.hpp
/// Coupled channels (docs/DESIGN.md §8.5): the layers whose tensors change size together when the
/// output channels of one layer grow. Channels flow unchanged through activations, batch norm,
/// dropout, pooling, flatten and depthwise convolutions; the paths of a parallel block that sums
/// or multiplies them carry the same channels (every path's output, the block's input through an
/// identity path, and its output); a concatenation places each path's channels at an offset, and
/// where a sum or a gate meets a concatenation the other paths' channels split to match it. A
/// convolution (`groups = 1`) or dense layer ends the flow: its input columns grow (a consumer)
/// and its output rows start a new channel space (a producer).

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/layers.hpp>
#include <netmorph/nn/model.hpp>
#include <netmorph/tensor.hpp>

#include <algorithm>
#include <string>
#include <utility>
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

/// One layer of a channel group, with where the group's channels sit on its channel axis.
struct channel_member {
  std::string layer;
  channel_role role = channel_role::producer;
  /// Values each channel owns: a producer's incoming filter, a through layer's per-channel
  /// values (1 for batch norm, `K_h K_w` for a depthwise filter), and in each output row of a
  /// consumer `K_h K_w` (a convolution), `H W` (a dense layer after a flatten) or 1.
  index_type span = 0;
  /// The first entry of the group on the layer's channel axis (a consumer's input axis, the
  /// output axis otherwise): the entries of the channels concatenated before the group's.
  index_type offset = 0;
  /// Entries of that axis per channel: 1, or `H W` for the features of a flatten.
  index_type entries = 1;
};

/// The layers whose tensors grow together with a layer's output channels.
struct channel_group {
  index_type channels = 0;  ///< the group's channel count
  /// In model order (depth first); a layer that reads and writes the group (a convolution inside
  /// a residual path) is listed as a consumer, then as a producer; a layer that holds the group
  /// twice (a concatenation of the same channels) is listed once per place.
  std::vector<channel_member> members;
};

namespace detail {

/// The channel spaces of a model (docs/DESIGN.md §8.5): the channel axis of every tensor between
/// layers is a list of segments, each a run of entries of one channel space (several after a
/// concatenation); spaces are joined where the paths of a parallel block are summed or multiplied
/// (a union-find over space ids).
template <typename Scalar>
struct channel_walk {
  enum class kind { mixing, through, grouped };
  struct segment {
    int space;
    index_type entries;  ///< entries on the channel axis: channels, or features after a flatten
  };
  using layout = std::vector<segment>;
  struct use {
    const layer<Scalar>* l;
    kind k;
    layout in, out;
  };
  std::vector<int> parent;
  std::vector<use> uses;
  /// Spaces that cannot grow, with the reason.
  std::vector<std::pair<int, std::string>> blocked;

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

  /// Spaces split into pieces where an elementwise merge met a concatenation: by the space's
  /// root at the time of the split, its pieces with their shares of `total` (a reference of `E`
  /// entries holds `E * share / total` entries of each piece).
  struct split_record {
    std::vector<std::pair<int, index_type>> pieces;
    index_type total;
  };
  std::vector<std::pair<int, split_record>> splits;

  const split_record* split_of(int space) {
    const int r = find(space);
    for (const auto& sp : splits)
      if (sp.first == r) return &sp.second;
    return nullptr;
  }
  /// The spaces `space` consists of now (itself, or the pieces of its splits).
  void leaves(int space, std::vector<int>& out) {
    if (const split_record* sp = split_of(space)) {
      for (const auto& pc : sp->pieces)
        leaves(pc.first, out);
    } else {
      out.push_back(find(space));
    }
  }
  /// `l` with every segment of a split space replaced by its pieces.
  layout expand(const layout& l) {
    layout out;
    for (const segment& sg : l)
      expand_into(sg, out);
    return out;
  }
  void expand_into(const segment& sg, layout& out) {
    const split_record* sp = split_of(sg.space);
    if (!sp) {
      out.push_back({find(sg.space), sg.entries});
      return;
    }
    bool whole = true;
    for (const auto& pc : sp->pieces)
      whole = whole && (sg.entries * pc.second) % sp->total == 0;
    if (!whole) {  // a piece would split a channel's features: none of them can grow
      std::vector<int> ls;
      leaves(sg.space, ls);
      for (int leaf : ls)
        blocked.emplace_back(leaf, "a merge splits the features of one channel");
      out.push_back({ls.front(), sg.entries});
      return;
    }
    const split_record copy = *sp;  // expand_into may add splits
    for (const auto& pc : copy.pieces)
      expand_into({pc.first, sg.entries * pc.second / copy.total}, out);
  }

  /// Joins the layouts of paths merged elementwise by `block` segment by segment. Where their
  /// segments differ (a concatenation summed with one convolution's output, a gate over a
  /// concatenation), a segment that spans several of another path's segments is split into
  /// pieces at their boundaries first: the convolution's output channels then belong to several
  /// spaces.
  void join(std::vector<layout> ls, const layer<Scalar>& block) {
    const auto total = [](const layout& l) {
      index_type t = 0;
      for (const segment& sg : l)
        t += sg.entries;
      return t;
    };
    for (const layout& l : ls)
      if (total(l) != total(ls[0])) {  // not reached for shapes that merge; refuse all the same
        for (const layout& k : ls)
          for (const segment& sg : k)
            blocked.emplace_back(
                find(sg.space),
                netmorph::detail::cat("block '", block.name(), "' (", block.describe(),
                                      ") merges paths of different channel sizes"));
        return;
      }
    for (bool changed = true; changed;) {
      changed = false;
      std::vector<index_type> cuts;  // every path's segment boundaries
      for (layout& l : ls) {
        l = expand(l);
        index_type o = 0;
        for (const segment& sg : l)
          cuts.push_back(o += sg.entries);
      }
      std::sort(cuts.begin(), cuts.end());
      for (std::size_t i = 0; i < ls.size() && !changed; ++i) {
        index_type o = 0;
        for (const segment& sg : ls[i]) {
          split_record rec{{}, sg.entries};
          index_type at = o;
          for (index_type cut : cuts)
            if (cut > at && cut < o + sg.entries) {
              rec.pieces.emplace_back(fresh(), cut - at);
              at = cut;
            }
          if (!rec.pieces.empty()) {
            rec.pieces.emplace_back(fresh(), o + sg.entries - at);
            splits.emplace_back(find(sg.space), std::move(rec));
            changed = true;
            break;
          }
          o += sg.entries;
        }
      }
    }
    for (const layout& l : ls)
      for (std::size_t k = 0; k < l.size(); ++k)
        unite(l[k].space, ls[0][k].space);
  }

  /// Walks `list` from the channel layout `in` at per-sample shape `shape` (updated); returns the
  /// layout after it.
  layout walk(const layer_list<Scalar>& list, const layout& in, shape_type& shape) {
    layout cur = in;
    for (const auto& p : list) {
      const layer<Scalar>* l = p.get();
      const shape_type next = l->output_shape(shape);
      switch (l->kind()) {
        case layer_kind::conv2d: {
          const auto* c = static_cast<const conv2d<Scalar>*>(l);
          const bool depthwise = c->groups() > 1 && c->groups() == c->in_channels() &&
                                 c->weight().value.dim(0) == c->in_channels();
          if (depthwise) {
            uses.push_back({l, kind::through, cur, cur});
          } else {
            layout out{{fresh(), c->weight().value.dim(0)}};
            uses.push_back({l, c->groups() == 1 ? kind::mixing : kind::grouped, cur, out});
            cur = std::move(out);
          }
          break;
        }
        case layer_kind::dense: {
          layout out{{fresh(), static_cast<const dense<Scalar>*>(l)->weight().value.dim(0)}};
          uses.push_back({l, kind::mixing, cur, out});
          cur = std::move(out);
          break;
        }
        case layer_kind::batch_norm:
          uses.push_back({l, kind::through, cur, cur});
          break;
        case layer_kind::flatten: {
          index_type per = 1;  // each channel's H*W consecutive features
          for (std::size_t a = 1; a < shape.size(); ++a)
            per *= shape[a];
          for (segment& sg : cur)
            sg.entries *= per;
          break;
        }
        case layer_kind::parallel: {
          const auto* block = static_cast<const parallel<Scalar>*>(l);
          std::vector<layout> outs;
          std::vector<shape_type> shapes;
          for (const auto& path : block->paths()) {
            shapes.push_back(shape);
            outs.push_back(walk(path, cur, shapes.back()));
          }
          layout out;
          if (block->merge() == merge_kind::concat) {
            for (const layout& o : outs)
              out.insert(out.end(), o.begin(), o.end());
          } else {
            std::vector<layout> joined;
            for (std::size_t i = 0; i < outs.size(); ++i) {
              if (!shapes[i].empty() && !next.empty() && shapes[i][0] != next[0]) {
                // a gate broadcast over the channels (one channel): it cannot grow with them
                for (const segment& sg : outs[i])
                  blocked.emplace_back(
                      sg.space, netmorph::detail::cat("block '", l->name(), "' (", l->describe(),
                                                      ") broadcasts path ", i,
                                                      "'s one channel over the others"));
                continue;
              }
              joined.push_back(outs[i]);
            }
            if (!joined.empty()) {
              out = joined.front();
              join(std::move(joined), *l);
            }
          }
          cur = std::move(out);
          break;
        }
        case layer_kind::pool2d:
        case layer_kind::adaptive_pool2d:
        case layer_kind::dropout:
        case layer_kind::activation:
        case layer_kind::p_activation:
          break;  // channels pass unchanged
      }
      shape = next;
    }
    return cur;
  }

  /// Where space `g` sits in `l`: (offset, entries) of each of its segments.
  std::vector<std::pair<index_type, index_type>> places(const layout& l, int g) {
    std::vector<std::pair<index_type, index_type>> out;
    index_type offset = 0;
    for (const segment& sg : expand(l)) {
      if (find(sg.space) == g) out.emplace_back(offset, sg.entries);
      offset += sg.entries;
    }
    return out;
  }
};

}  // namespace detail

/// The channel group of layer `name`'s output channels: every layer whose tensors grow when they
/// do (docs/DESIGN.md §8.5). `who` prefixes the messages.
/// \throws value_error when the layer is not conv2d/dense, when the group reaches the model's
///         input or output (they cannot grow), when a grouped convolution other than a
///         depthwise one reads or writes the group (it mixes channels in groups), when the
///         channels are merged where they cannot grow (a one-channel gate broadcast over them),
///         or when the layer's output channels are split between several groups (a convolution
///         summed with a concatenation: widen a layer of the concatenation).
template <typename Scalar>
channel_group channel_group_of(const model<Scalar>& m, const std::string& name,
                               const char* who = "nn::channel_group_of") {
  using netmorph::detail::require;
  using walk_type = detail::channel_walk<Scalar>;
  using kind = typename walk_type::kind;
  walk_type w;
  const int input = w.fresh();
  shape_type shape = m.input_shape();
  const typename walk_type::layout in{{input, shape.empty() ? 1 : shape[0]}};
  const typename walk_type::layout output = w.walk(m.layers(), in, shape);
  const typename walk_type::use* target = nullptr;
  for (const auto& u : w.uses)
    if (u.l->name() == name) target = &u;
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
  const typename walk_type::layout made = w.expand(target->out);
  require<value_error>(made.size() == 1, who, ": layer '", name, "' (", target->l->describe(),
                       target->k == kind::through
                           ? ") filters the channels of a concatenation; widen a layer that "
                             "makes them"
                           : ") writes channels that a merge with a concatenation splits between "
                             "several groups; widen a layer of the concatenation");
  const int g = w.find(made.front().space);
  std::vector<int> fixed;  // the model input's spaces
  w.leaves(input, fixed);
  require<value_error>(std::find(fixed.begin(), fixed.end(), g) == fixed.end(), who,
                       ": the output channels of layer '", name,
                       "' are merged with the model's input (an identity path from it) or filter "
                       "it, and the input cannot grow");
  require<value_error>(w.places(output, g).empty(), who, ": layer '", name,
                       "' has no conv2d/dense layer after it whose input could grow: its channels "
                       "reach the model's output");
  for (const auto& u : w.uses) {  // every expansion once, so that `blocked` is complete
    w.expand(u.in);
    w.expand(u.out);
  }
  for (const auto& b : w.blocked) {
    std::vector<int> ls;
    w.leaves(b.first, ls);
    for (int leaf : ls)
      require<value_error>(w.find(leaf) != g, who, ": the channels of layer '", name,
                           "' cannot grow: ", b.second);
  }
  channel_group out;
  out.channels = made.front().entries;
  const index_type c = out.channels;
  require<value_error>(c > 0, who, ": layer '", name, "' has no output channels");
  for (const auto& u : w.uses) {
    const auto reads = w.places(u.in, g), writes = w.places(u.out, g);
    if (reads.empty() && writes.empty()) continue;
    require<value_error>(u.k != kind::grouped, who, ": layer '", u.l->name(), "' (",
                         u.l->describe(), ") ", reads.empty() ? "writes" : "reads",
                         " the channels of layer '", name,
                         "' and mixes them in groups: widening through a grouped convolution "
                         "other than a depthwise one is not supported");
    // Every layer holds a whole number of entries per channel: one, or H*W after a flatten. The
    // target must hold one (a layer that writes a flattened stream makes features, not channels).
    for (const auto* places : {&reads, &writes})
      for (const auto& pl : *places)
        require<value_error>(pl.second >= c && pl.second % c == 0, who, ": layer '", u.l->name(),
                             "' holds ", pl.second, " entries of the channels of layer '", name,
                             "' (", c,
                             (pl.second < c ? "); they are the features of a flatten: widen "
                                              "the layer that makes the channels before it"
                                            : "), not a whole number per channel"));
    const tensor<Scalar>* weight = nullptr;
    if (const auto* cv = layer_cast<conv2d>(u.l)) weight = &cv->weight().value;
    if (const auto* d = layer_cast<dense>(u.l)) weight = &d->weight().value;
    const index_type row = weight ? weight->size() / weight->dim(0) : 1;
    if (u.k == kind::through) {
      for (const auto& pl : writes)
        out.members.push_back({u.l->name(), channel_role::through, row, pl.first, pl.second / c});
      continue;
    }
    // A consumer's row holds `inner` values per input entry (K_h K_w for a convolution).
    index_type axis = 0;
    for (const auto& sg : u.in)
      axis += sg.entries;
    const index_type inner = row / std::max<index_type>(1, axis);
    for (const auto& pl : reads)
      out.members.push_back(
          {u.l->name(), channel_role::consumer, pl.second / c * inner, pl.first, pl.second / c});
    for (const auto& pl : writes)
      out.members.push_back({u.l->name(), channel_role::producer, row, pl.first, pl.second / c});
  }
  return out;
}

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_CHANNELS_HPP

#ifndef NETMORPH_NN_NOTATION_HPP
#define NETMORPH_NN_NOTATION_HPP

/// \file notation.hpp
/// The paper's architecture notation: `(K:C)` is a K x K convolution with C output channels,
/// `(K:CxN)` that layer N times, `[...]` a group of layers, `[...]xN` the group N times. Every
/// top-level `(K:C)` and every `[...]` is a group followed by pooling; the rest of the model
/// (activation, pooling, dense head) comes from an `architecture_options`. Examples:
/// `(5:32)(5:32)(5:64)` (Caffe's cifar10_quick), `[(5:32x4)(1:32)]x2[(5:64x4)(1:64)]`.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/nn/model.hpp>

#include <cctype>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace netmorph {
namespace nn {

/// What the notation leaves out.
struct architecture_options {
  activation_fn act{activation_kind::relu, 0.01};  ///< after every convolution and hidden dense
  bool batch_norm = false;                         ///< batch norm before every activation
  index_type pool = 2;                   ///< pooling window and stride after each group; 0: none
  bool max_pool = true;                  ///< max (else average) pooling
  std::vector<index_type> dense_head{};  ///< hidden dense widths after the flatten
  index_type classes = 10;               ///< outputs of the last dense layer
  std::uint64_t seed = 0;                ///< He initialisation
};

namespace detail {

struct conv_spec {
  index_type k = 0, c = 0;
  bool operator==(const conv_spec& o) const { return k == o.k && c == o.c; }
};
using group_spec = std::vector<conv_spec>;

class notation_parser {
 public:
  explicit notation_parser(const std::string& s) : s_(s) {}

  std::vector<group_spec> parse() {
    std::vector<group_spec> groups;
    skip();
    while (pos_ < s_.size()) {
      if (s_[pos_] == '(') {
        groups.push_back(layer());
      } else if (s_[pos_] == '[') {
        ++pos_;
        group_spec g;
        skip();
        while (pos_ < s_.size() && s_[pos_] != ']') {
          group_spec l = layer();
          g.insert(g.end(), l.begin(), l.end());
          skip();
        }
        expect(']');
        netmorph::detail::require<value_error>(
            !g.empty(), "parse_architecture: empty group before position ", pos_, " in '", s_, "'");
        const index_type n = repeat();
        for (index_type r = 0; r < n; ++r)
          groups.push_back(g);
      } else {
        fail("expected '(' or '['");
      }
      skip();
    }
    netmorph::detail::require<value_error>(!groups.empty(), "parse_architecture: no layers in '",
                                           s_, "'");
    return groups;
  }

 private:
  group_spec layer() {
    expect('(');
    const index_type k = number("a kernel size");
    expect(':');
    const index_type c = number("a channel count");
    index_type n = 1;
    skip();
    if (pos_ < s_.size() && (s_[pos_] == 'x' || s_[pos_] == 'X')) {
      ++pos_;
      n = number("a repeat count");
    }
    expect(')');
    return group_spec(static_cast<std::size_t>(n), conv_spec{k, c});
  }
  index_type repeat() {
    skip();
    if (pos_ < s_.size() && (s_[pos_] == 'x' || s_[pos_] == 'X')) {
      ++pos_;
      return number("a repeat count");
    }
    return 1;
  }
  index_type number(const char* what) {
    skip();
    const std::size_t start = pos_;
    index_type v = 0;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      v = v * 10 + (s_[pos_] - '0');
      if (v > 1000000) fail("number too large");
      ++pos_;
    }
    if (pos_ == start) fail(std::string("expected ") + what);
    if (v < 1) {
      pos_ = start;
      fail(std::string("expected ") + what + " >= 1");
    }
    return v;
  }
  void expect(char c) {
    skip();
    if (pos_ >= s_.size() || s_[pos_] != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  void skip() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_])))
      ++pos_;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw value_error(netmorph::detail::cat(
        "parse_architecture: ", what, " at position ", pos_,
        pos_ < s_.size() ? std::string(" ('") + s_[pos_] + "')" : std::string(" (end)"), " in '",
        s_, "'"));
  }
  const std::string& s_;
  std::size_t pos_ = 0;
};

template <typename Scalar>
void add_activation(model<Scalar>& m, index_type channels, const architecture_options& t) {
  if (t.batch_norm) m.add(batch_norm<Scalar>(batch_norm_weights<Scalar>::identity(channels)));
  m.add(activation<Scalar>(t.act));
}

}  // namespace detail

/// Builds a model from the notation and a template. `input` is the per-sample shape
/// `(C, H, W)`. Pooling is skipped where the blob is already smaller than the window.
/// \throws value_error naming the position of a syntax error.
template <typename Scalar>
model<Scalar> parse_architecture(const std::string& notation, shape_type input,
                                 const architecture_options& t = {}) {
  netmorph::detail::require<shape_error>(input.size() == 3,
                                         "parse_architecture: input must be (C, H, W), got ",
                                         netmorph::detail::shape_string(input));
  const std::vector<detail::group_spec> groups = detail::notation_parser(notation).parse();
  model<Scalar> m(input, t.seed);
  std::mt19937_64 rng(t.seed);
  for (const auto& g : groups) {
    for (const auto& l : g) {
      const index_type in = m.output_shape()[0];
      m.add(conv2d<Scalar>::he(in, l.c, l.k, rng));
      detail::add_activation(m, l.c, t);
    }
    const shape_type s = m.output_shape();
    if (t.pool > 0 && s[1] >= t.pool && s[2] >= t.pool) {
      m.add(pool2d<Scalar>(t.max_pool ? pool_mode::max : pool_mode::average, t.pool, t.pool));
    }
  }
  m.add(flatten<Scalar>());
  for (index_type w : t.dense_head) {
    m.add(dense<Scalar>::he(m.output_shape()[0], w, rng));
    detail::add_activation(m, w, t);
  }
  m.add(dense<Scalar>::he(m.output_shape()[0], t.classes, rng));
  return m;
}

namespace detail {

inline std::string print_layer(const conv_spec& c, index_type n) {
  std::ostringstream os;
  netmorph::detail::throwing(os);
  os << '(' << c.k << ':' << c.c;
  if (n > 1) os << 'x' << n;
  os << ')';
  return os.str();
}

inline std::string print_group(const group_spec& g) {
  std::string out;
  for (std::size_t i = 0; i < g.size();) {
    std::size_t j = i;
    while (j < g.size() && g[j] == g[i])
      ++j;
    out += print_layer(g[i], static_cast<index_type>(j - i));
    i = j;
  }
  return g.size() == 1 ? out : "[" + out + "]";
}

/// A parallel block in the notation: `{` its paths' convolutions (nested blocks likewise) joined
/// by `+` (add), `|` (concat) or `*` (mul) `}`.
template <typename Scalar>
std::string print_block(const parallel<Scalar>& block) {
  const char* join = block.merge() == merge_kind::add      ? "+"
                     : block.merge() == merge_kind::concat ? "|"
                                                           : "*";
  std::string out = "{";
  for (std::size_t k = 0; k < block.paths().size(); ++k) {
    if (k) out += join;
    for (const auto& q : block.paths()[k]) {
      if (const auto* pc = layer_cast<conv2d>(q.get()))
        out += print_layer(conv_spec{pc->weight().value.dim(2), pc->weight().value.dim(0)}, 1);
      if (const auto* inner = layer_cast<parallel>(q.get())) out += print_block(*inner);
    }
  }
  return out + "}";
}

}  // namespace detail

/// Prints the convolutional part of a model in the notation: a pooling layer ends a group.
/// A parallel block is printed as `{path+path}`, `{path|path}` (concat) or `{path*path}` (mul)
/// (netmorph's extension; not parsed back).
template <typename Scalar>
std::string to_notation(const model<Scalar>& m) {
  std::string out;
  std::vector<detail::group_spec> groups;
  detail::group_spec cur;
  auto flush = [&]() {
    if (!cur.empty()) groups.push_back(cur);
    cur.clear();
  };
  auto emit = [&]() {
    flush();
    for (std::size_t i = 0; i < groups.size();) {
      std::size_t j = i;
      while (j < groups.size() && groups[j] == groups[i] && groups[i].size() > 1)
        ++j;
      if (j - i > 1) {
        out += detail::print_group(groups[i]) + "x" + std::to_string(j - i);
        i = j;
      } else {
        out += detail::print_group(groups[i]);
        ++i;
      }
    }
    groups.clear();
  };
  auto spec = [](const conv2d<Scalar>& c) {
    return detail::conv_spec{c.weight().value.dim(2), c.weight().value.dim(0)};
  };
  for (const auto& l : m.layers()) {
    switch (l->kind()) {
      case layer_kind::conv2d:
        cur.push_back(spec(*layer_cast<conv2d>(l.get())));
        break;
      case layer_kind::pool2d:
        flush();
        break;
      case layer_kind::parallel:
        emit();
        out += detail::print_block(*layer_cast<parallel>(l.get()));
        break;
      default:
        break;
    }
  }
  emit();
  return out;
}

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_NOTATION_HPP

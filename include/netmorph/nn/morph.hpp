#ifndef NETMORPH_NN_MORPH_HPP
#define NETMORPH_NN_MORPH_HPP

/// \file morph.hpp
/// Morph operations on a whole model, addressed by layer index. Each calls the weight-level
/// morph, keeps every neighbour consistent (the next layer's inputs, batch norm, a flatten
/// followed by a dense layer, P-activations at a = 1 between new layers), carries the SGD
/// velocities over (unchanged parameters keep theirs, moved with any channel permutation; new
/// parameters start at zero) and measures the whole model's function preservation on probes.
///
/// Batch norm inserted by `deepen` (`insert_batch_norm`) has gamma = sqrt(1 + eps), beta = 0,
/// running mean 0 and variance 1: the identity in inference mode. In training mode batch norm
/// normalises with the batch's own statistics, so right after the morph a training-mode forward
/// pass differs from the parent's (the running statistics then adapt); function preservation is
/// measured, and promised, in inference mode.

#include <netmorph/activations.hpp>
#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/morph/depth.hpp>
#include <netmorph/morph/kernel_size.hpp>
#include <netmorph/morph/subnet.hpp>
#include <netmorph/morph/width.hpp>
#include <netmorph/nn/model.hpp>
#include <netmorph/tensor.hpp>

#include <optional>
#include <string>
#include <vector>

namespace netmorph {
namespace nn {

/// What a morph of a model did and how well the whole model kept its function.
struct model_morph_report {
  std::string operation;
  index_type layer = 0;
  double max_output_error = 0, relative_output_error = 0;  ///< whole model, inference mode
  std::string detail;  ///< the weight-level report, where there is one
};

namespace detail {

template <typename Scalar>
tensor<Scalar> probe_input(model<Scalar>& m, std::uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x7F4A7C15u);
  shape_type s = m.input_shape();
  s.insert(s.begin(), 4);
  return tensor<Scalar>::random_normal(s, rng);
}

template <typename Scalar>
void measure(model<Scalar>& m, const tensor<Scalar>& x, const tensor<Scalar>& before,
             model_morph_report& rep) {
  const tensor<Scalar> after = m.forward(x, false);
  rep.max_output_error = max_abs_error(after, before);
  rep.relative_output_error = relative_error(after, before);
}

/// The activation following layer `i` (for the P-activation inserted between new layers).
template <typename Scalar>
activation_fn following_activation(model<Scalar>& m, index_type i) {
  for (index_type k = i + 1; k < m.size(); ++k) {
    if (auto* a = dynamic_cast<activation<Scalar>*>(&m.at(k))) return a->fn();
    if (auto* p = dynamic_cast<p_activation<Scalar>*>(&m.at(k))) return p->fn().phi;
    if (dynamic_cast<conv2d<Scalar>*>(&m.at(k)) || dynamic_cast<dense<Scalar>*>(&m.at(k))) break;
  }
  return activation_fn{activation_kind::relu, 0.01};
}

template <typename Scalar>
std::unique_ptr<layer<Scalar>> p_identity(activation_fn phi) {
  return std::make_unique<p_activation<Scalar>>(make_p_activation(phi, 1.0));
}

/// Plain convolution layers as model layers with P-activations at a = 1 between them.
template <typename Scalar>
layer_list<Scalar> chain_with_p_identity(const std::vector<conv2d_weights<Scalar>>& layers,
                                         activation_fn phi) {
  layer_list<Scalar> list;
  for (std::size_t k = 0; k < layers.size(); ++k) {
    if (k) list.push_back(p_identity<Scalar>(phi));
    list.push_back(
        std::make_unique<conv2d<Scalar>>(layers[k].weight, layers[k].bias, layers[k].options));
  }
  return list;
}

template <typename Scalar>
void require_layer(bool ok, const char* who, index_type i, const layer<Scalar>& l,
                   const char* want) {
  netmorph::detail::require<value_error>(ok, who, ": layer ", i, " is ", l.kind(), ", expected ",
                                         want);
}

}  // namespace detail

/// Depth morph of layer `i` (conv2d or dense): it becomes two layers with a P-activation at
/// a = 1 between them (of the activation that follows layer `i`), optionally with an identity
/// batch norm after the first. See `netmorph::deepen` for the options and what it throws.
template <typename Scalar>
model_morph_report deepen(model<Scalar>& m, index_type i, const deepen_options& opt = {},
                          bool insert_batch_norm = false) {
  layer<Scalar>& l = m.at(i);
  model_morph_report rep{"deepen", i, 0, 0, ""};
  const tensor<Scalar> x = detail::probe_input(m, opt.seed);
  const tensor<Scalar> before = m.forward(x, false);
  const activation_fn phi = detail::following_activation(m, i);
  layer_list<Scalar> repl;
  index_type c1 = 0;
  if (auto* c = dynamic_cast<conv2d<Scalar>*>(&l)) {
    deepen_result<Scalar> r = netmorph::deepen(c->weights(), opt);
    rep.detail = r.report.summary();
    c1 = r.first.weight.dim(0);
    repl.push_back(std::make_unique<conv2d<Scalar>>(r.first.weight, r.first.bias, r.first.options));
    if (insert_batch_norm) {
      auto bn = batch_norm_weights<Scalar>::identity(c1);
      for (Scalar& g : bn.gamma)
        g = static_cast<Scalar>(std::sqrt(1.0 + bn.eps));
      repl.push_back(std::make_unique<batch_norm<Scalar>>(bn));
    }
    repl.push_back(detail::p_identity<Scalar>(phi));
    repl.push_back(
        std::make_unique<conv2d<Scalar>>(r.second.weight, r.second.bias, r.second.options));
  } else if (auto* d = dynamic_cast<dense<Scalar>*>(&l)) {
    deepen_dense_result<Scalar> r = netmorph::deepen(d->weights(), opt);
    rep.detail = r.report.summary();
    c1 = r.first.weight.dim(0);
    repl.push_back(std::make_unique<dense<Scalar>>(r.first.weight, r.first.bias));
    if (insert_batch_norm) {
      auto bn = batch_norm_weights<Scalar>::identity(c1);
      for (Scalar& g : bn.gamma)
        g = static_cast<Scalar>(std::sqrt(1.0 + bn.eps));
      repl.push_back(std::make_unique<batch_norm<Scalar>>(bn));
    }
    repl.push_back(detail::p_identity<Scalar>(phi));
    repl.push_back(std::make_unique<dense<Scalar>>(r.second.weight, r.second.bias));
  } else {
    detail::require_layer(false, "nn::deepen", i, l, "conv2d or dense");
  }
  m.splice(i, i + 1, std::move(repl));
  detail::measure(m, x, before, rep);
  return rep;
}

/// Width morph of layer `i` (conv2d or dense) to `opt.new_channels` outputs. The layers up to
/// the next conv2d/dense may be activations, P-activations, batch norm (widened with it),
/// dropout, pooling and one flatten (the dense layer after it gets `H*W` columns per channel).
/// \throws value_error when layer `i` is not conv2d/dense or something else sits in between.
template <typename Scalar>
model_morph_report widen(model<Scalar>& m, index_type i, widen_options opt) {
  using netmorph::detail::require;
  layer<Scalar>& l = m.at(i);
  auto* lc = dynamic_cast<conv2d<Scalar>*>(&l);
  auto* ld = dynamic_cast<dense<Scalar>*>(&l);
  detail::require_layer(lc || ld, "nn::widen", i, l, "conv2d or dense");
  model_morph_report rep{"widen", i, 0, 0, ""};
  const tensor<Scalar> x = detail::probe_input(m, opt.seed);
  const tensor<Scalar> before = m.forward(x, false);

  // Walk to the next parametric layer, collecting what sits between.
  batch_norm<Scalar>* bnl = nullptr;
  bool flattened = false, nonzero_at_zero = false;
  index_type j = i + 1;
  for (; j < m.size(); ++j) {
    layer<Scalar>& k = m.at(j);
    if (dynamic_cast<conv2d<Scalar>*>(&k) || dynamic_cast<dense<Scalar>*>(&k)) break;
    if (auto* a = dynamic_cast<activation<Scalar>*>(&k)) {
      nonzero_at_zero = nonzero_at_zero || !a->fn().zero_at_zero();
    } else if (auto* p = dynamic_cast<p_activation<Scalar>*>(&k)) {
      nonzero_at_zero = nonzero_at_zero || p->fn().value(0.0) != 0.0;
    } else if (auto* b = dynamic_cast<batch_norm<Scalar>*>(&k)) {
      require<value_error>(bnl == nullptr, "nn::widen: two batch norms between layer ", i,
                           " and the next conv2d/dense layer");
      bnl = b;
    } else if (dynamic_cast<flatten<Scalar>*>(&k)) {
      flattened = true;
    } else if (!dynamic_cast<dropout<Scalar>*>(&k) && !dynamic_cast<pool2d<Scalar>*>(&k)) {
      require<value_error>(false, "nn::widen: layer ", j, " (", k.kind(), ") between layer ", i,
                           " and the next conv2d/dense layer cannot be widened through");
    }
  }
  require<value_error>(j < m.size(), "nn::widen: layer ", i,
                       " has no following conv2d/dense layer whose input could grow");
  // The weight-level rule only needs to know whether a zero channel stays zero.
  opt.phi = nonzero_at_zero ? activation_fn{activation_kind::sigmoid}
                            : activation_fn{activation_kind::identity};
  opt.probe_count = 0;
  std::optional<batch_norm_weights<Scalar>> bn;
  if (bnl) bn = bnl->weights();
  layer<Scalar>& nx = m.at(j);
  auto* nc = dynamic_cast<conv2d<Scalar>*>(&nx);
  auto* nd = dynamic_cast<dense<Scalar>*>(&nx);

  std::vector<index_type> source;
  index_type c_old = 0;
  auto carry_rows = [&](const tensor<Scalar>& old_v, tensor<Scalar>& new_v) {
    const index_type row = old_v.size() / std::max<index_type>(1, c_old);
    for (std::size_t q = 0; q < source.size(); ++q)
      if (source[q] >= 0 && new_v.size())
        std::copy(old_v.data() + source[q] * row, old_v.data() + (source[q] + 1) * row,
                  new_v.data() + static_cast<index_type>(q) * row);
  };
  auto carry_cols = [&](const tensor<Scalar>& old_v, tensor<Scalar>& new_v, index_type groups,
                        index_type span, bool divide) {
    std::vector<index_type> count(static_cast<std::size_t>(c_old), 0);
    for (index_type s : source)
      if (s >= 0) ++count[static_cast<std::size_t>(s)];
    const index_type cn = static_cast<index_type>(source.size());
    for (index_type g = 0; g < groups; ++g)
      for (index_type q = 0; q < cn; ++q) {
        const index_type s = source[static_cast<std::size_t>(q)];
        if (s < 0) continue;
        const Scalar f = divide
                             ? Scalar(1) / static_cast<Scalar>(count[static_cast<std::size_t>(s)])
                             : Scalar(1);
        for (index_type t = 0; t < span; ++t)
          new_v.data()[(g * cn + q) * span + t] = old_v.data()[(g * c_old + s) * span + t] * f;
      }
  };
  const bool divide = opt.rule == width_rule::net2net;
  auto apply_in = [&](auto* lay, auto& res) {
    // Incoming weights and bias: values from the morph, velocities moved with the channels.
    c_old = lay->weight().value.dim(0);
    source = res.source;
    parameter<Scalar> w("weight", res.layer.weight),
        b("bias",
          res.layer.bias.empty() ? tensor<Scalar>({res.layer.weight.dim(0)}) : res.layer.bias);
    carry_rows(lay->weight().velocity, w.velocity);
    if (lay->has_bias()) carry_rows(lay->bias().velocity, b.velocity);
    lay->weight() = std::move(w);
    lay->bias() = std::move(b);
  };
  auto apply_bn = [&](auto& res) {
    if (!bnl) return;
    const auto& nb = *res.bn;
    parameter<Scalar> g("gamma", nb.gamma), be("beta", nb.beta);
    carry_rows(bnl->gamma().velocity, g.velocity);
    carry_rows(bnl->beta().velocity, be.velocity);
    bnl->gamma() = std::move(g);
    bnl->beta() = std::move(be);
    bnl->running_mean() = nb.running_mean;
    bnl->running_var() = nb.running_var;
  };
  if (lc && nc) {
    auto r = netmorph::widen(lc->weights(), nc->weights(), opt, bn);
    rep.detail = "conv2d -> conv2d";
    apply_in(lc, r);
    apply_bn(r);
    parameter<Scalar> w("weight", r.next.weight);
    const index_type kk = r.next.weight.dim(2) * r.next.weight.dim(3);
    carry_cols(nc->weight().velocity, w.velocity, r.next.weight.dim(0), kk, divide);
    nc->weight() = std::move(w);
  } else if (lc && nd) {
    require<value_error>(flattened, "nn::widen: a dense layer ", j, " follows conv2d layer ", i,
                         " without a flatten");
    auto r = netmorph::widen(lc->weights(), nd->weights(), opt, bn);
    rep.detail = "conv2d -> flatten -> dense";
    apply_in(lc, r);
    apply_bn(r);
    parameter<Scalar> w("weight", r.next.weight);
    const index_type span = nd->weight().value.dim(1) / c_old;
    carry_cols(nd->weight().velocity, w.velocity, r.next.weight.dim(0), span, divide);
    nd->weight() = std::move(w);
  } else if (ld && nd) {
    auto r = netmorph::widen(ld->weights(), nd->weights(), opt, bn);
    rep.detail = "dense -> dense";
    apply_in(ld, r);
    apply_bn(r);
    parameter<Scalar> w("weight", r.next.weight);
    carry_cols(nd->weight().velocity, w.velocity, r.next.weight.dim(0), 1, divide);
    nd->weight() = std::move(w);
  } else {
    require<value_error>(false, "nn::widen: dense layer ", i, " is followed by conv2d layer ", j);
  }
  m.output_shape();  // re-validates the chain
  detail::measure(m, x, before, rep);
  return rep;
}

/// Kernel-size morph of conv2d layer `i` to `new_kernel` (velocities zero-padded likewise).
template <typename Scalar>
model_morph_report grow_kernel(model<Scalar>& m, index_type i, index_type new_kernel) {
  layer<Scalar>& l = m.at(i);
  auto* c = dynamic_cast<conv2d<Scalar>*>(&l);
  detail::require_layer(c != nullptr, "nn::grow_kernel", i, l, "conv2d");
  model_morph_report rep{"grow_kernel", i, 0, 0, ""};
  const tensor<Scalar> x = detail::probe_input(m, 1);
  const tensor<Scalar> before = m.forward(x, false);
  auto r = netmorph::grow_kernel(c->weights(), new_kernel);
  parameter<Scalar> w("weight", r.layer.weight);
  w.velocity = pad_kernel(c->weight().velocity, new_kernel, new_kernel);
  auto repl = std::make_unique<conv2d<Scalar>>(r.layer.weight, r.layer.bias, r.layer.options);
  repl->weight() = std::move(w);
  if (c->has_bias()) repl->bias().velocity = c->bias().velocity;
  layer_list<Scalar> list;
  list.push_back(std::move(repl));
  m.splice(i, i + 1, std::move(list));
  detail::measure(m, x, before, rep);
  return rep;
}

/// Sequential-subnet morph of conv2d layer `i`, P-activations at a = 1 between the new layers.
template <typename Scalar>
model_morph_report to_subnet(model<Scalar>& m, index_type i, const subnet_options& opt) {
  layer<Scalar>& l = m.at(i);
  auto* c = dynamic_cast<conv2d<Scalar>*>(&l);
  detail::require_layer(c != nullptr, "nn::to_subnet", i, l, "conv2d");
  model_morph_report rep{"to_subnet", i, 0, 0, ""};
  const tensor<Scalar> x = detail::probe_input(m, opt.seed);
  const tensor<Scalar> before = m.forward(x, false);
  const activation_fn phi = detail::following_activation(m, i);
  auto r = netmorph::to_subnet(c->weights(), opt);
  m.splice(i, i + 1, detail::chain_with_p_identity(r.layers, phi));
  detail::measure(m, x, before, rep);
  return rep;
}

/// n-way stacked-subnet morph of conv2d layer `i`: a parallel block of sequential subnets.
template <typename Scalar>
model_morph_report to_stacked_subnet(model<Scalar>& m, index_type i,
                                     const stacked_subnet_options& opt) {
  layer<Scalar>& l = m.at(i);
  auto* c = dynamic_cast<conv2d<Scalar>*>(&l);
  detail::require_layer(c != nullptr, "nn::to_stacked_subnet", i, l, "conv2d");
  model_morph_report rep{"to_stacked_subnet", i, 0, 0, ""};
  const tensor<Scalar> x = detail::probe_input(m, opt.seed);
  const tensor<Scalar> before = m.forward(x, false);
  const activation_fn phi = detail::following_activation(m, i);
  auto r = netmorph::to_stacked_subnet(c->weights(), opt);
  std::vector<layer_list<Scalar>> paths;
  for (const auto& p : r.paths)
    paths.push_back(detail::chain_with_p_identity(p, phi));
  layer_list<Scalar> list;
  list.push_back(std::make_unique<parallel<Scalar>>(std::move(paths)));
  m.splice(i, i + 1, std::move(list));
  detail::measure(m, x, before, rep);
  return rep;
}

}  // namespace nn
}  // namespace netmorph

#endif  // NETMORPH_NN_MORPH_HPP

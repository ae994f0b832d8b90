#ifndef NETMORPH_TESTS_CHANNEL_SUPPORT_HPP
#define NETMORPH_TESTS_CHANNEL_SUPPORT_HPP

// Builders of layers and blocks for the channel-group and merge tests, and the exactness check
// of nn::widen under both rules.
#include "support/nn_support.hpp"

#include <netmorph/nn.hpp>

#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace nmtest {

using netmorph::activation_fn;
using netmorph::activation_kind;
using netmorph::conv2d_options;
using netmorph::tensor;
namespace nn = netmorph::nn;

template <typename Scalar>
nn::conv2d<Scalar> conv(idx in, idx out, idx k, std::mt19937_64& rng, idx stride = 1,
                        bool bias = true, idx groups = 1) {
  return nn::conv2d<Scalar>(nmtest::randn<Scalar>({out, in / groups, k, k}, rng, 0.5),
                            bias ? nmtest::randn<Scalar>({out}, rng, 0.2) : tensor<Scalar>(),
                            conv2d_options{stride, (k - 1) / 2, groups});
}

/// A batch norm with non-trivial parameters and statistics, as after training.
template <typename Scalar>
nn::batch_norm<Scalar> bn(idx c, std::mt19937_64& rng) {
  auto w = netmorph::batch_norm_weights<Scalar>::identity(c);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  for (idx i = 0; i < c; ++i) {
    w.gamma(i) = static_cast<Scalar>(u(rng));
    w.beta(i) = static_cast<Scalar>(u(rng) - 1.0);
    w.running_mean(i) = static_cast<Scalar>(u(rng) - 1.0);
    w.running_var(i) = static_cast<Scalar>(u(rng));
  }
  return nn::batch_norm<Scalar>(w);
}

template <typename Scalar>
nn::activation<Scalar> relu() {
  return nn::activation<Scalar>(activation_fn{activation_kind::relu});
}

/// A path of a parallel block from layers given by value.
template <typename Scalar, typename... Layers>
nn::layer_list<Scalar> path(Layers... layers) {
  nn::layer_list<Scalar> out;
  (out.push_back(std::make_unique<Layers>(std::move(layers))), ...);
  return out;
}

/// Adds a parallel block `name` of a body path (`name.body.<j>`) and a skip path
/// (`name.skip.<j>`; empty: the identity).
template <typename Scalar>
void add_block(nn::model<Scalar>& m, const std::string& name, nn::layer_list<Scalar> body,
               nn::layer_list<Scalar> skip, nn::merge_kind merge = nn::merge_kind::add) {
  for (std::size_t j = 0; j < body.size(); ++j)
    body[j]->set_name(name + ".body." + std::to_string(j));
  for (std::size_t j = 0; j < skip.size(); ++j)
    skip[j]->set_name(name + ".skip." + std::to_string(j));
  std::vector<nn::layer_list<Scalar>> paths;
  paths.push_back(std::move(body));
  paths.push_back(std::move(skip));
  m.add(nn::parallel<Scalar>(std::move(paths), merge), name);
}

/// Widens `target` of copies of `parent` by `grow` channels with each rule and checks, on fresh
/// inputs and independently of the report, that each child computes the parent's function.
template <typename Scalar>
void require_exact_widen(const nn::model<Scalar>& parent, const std::string& target, idx grow,
                         std::mt19937_64& rng) {
  nn::model<Scalar> copy = parent;
  netmorph::shape_type s = copy.input_shape();
  s.insert(s.begin(), 3);
  const tensor<Scalar> x = nmtest::randn<Scalar>(s, rng);
  const tensor<Scalar> y = copy.forward(x, false);
  const idx c = nn::channel_group_of(copy, target).channels;
  for (const auto rule : {netmorph::width_rule::netmorph, netmorph::width_rule::net2net}) {
    nn::model<Scalar> m = parent;
    netmorph::widen_options w;
    w.new_channels = c + grow;
    w.rule = rule;
    w.seed = rng();
    CAPTURE(target, c, grow, netmorph::to_string(rule));
    const auto r = nn::widen(m, target, w);
    CAPTURE(r.summary());
    REQUIRE(r.width->new_channels == c + grow);
    REQUIRE(*r.relative_output_error <= nmtest::exact_tolerance<Scalar>());
    REQUIRE(netmorph::relative_error(m.forward(x, false), y) <= nmtest::exact_tolerance<Scalar>());
    REQUIRE(nn::channel_group_of(m, target).channels == c + grow);
  }
}

/// "name:role" for every member of the group, to compare with an expected list.
inline std::vector<std::string> roles(const nn::channel_group& g) {
  std::vector<std::string> out;
  for (const auto& mb : g.members)
    out.push_back(mb.layer + ":" + nn::to_string(mb.role));
  return out;
}

}  // namespace nmtest

#endif  // NETMORPH_TESTS_CHANNEL_SUPPORT_HPP

#ifndef NETMORPH_TESTS_IO_SUPPORT_HPP
#define NETMORPH_TESTS_IO_SUPPORT_HPP

// Helpers of the io tests: temporary files, hand-made safetensors bytes, and a model with every
// layer kind.

#include "support/test_support.hpp"

#include <netmorph/io.hpp>
#include <netmorph/nn.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace nmtest {

/// A path in the test's working directory, unique per test, removed at the end of its scope.
struct temp_path {
  std::string path;
  explicit temp_path(const std::string& stem) : path("netmorph_io_" + stem + ".safetensors") {
    std::remove(path.c_str());
  }
  ~temp_path() { std::remove(path.c_str()); }
  temp_path(const temp_path&) = delete;
  temp_path& operator=(const temp_path&) = delete;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

/// An 8-byte little-endian length, `header`, then `data`.
inline std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i, n >>= 8)
    out[static_cast<std::size_t>(i)] = static_cast<char>(n & 0xffu);
  return out + header + data;
}

/// Little-endian bytes of values of type T.
template <typename T>
std::string le_bytes(const std::vector<T>& values) {
  std::string out;
  for (T v : values) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    if (!netmorph::io::detail::little_endian_host()) std::reverse(b, b + sizeof(T));
    out.append(reinterpret_cast<const char*>(b), sizeof(T));
  }
  return out;
}

/// Random non-zero values in every parameter, velocity and running statistic of `m`.
template <typename Scalar>
void randomise(netmorph::nn::model<Scalar>& m, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0), pos(0.5, 2.0);
  for (auto* p : m.parameters()) {
    if (p->name == "a") {
      p->value(0) = static_cast<Scalar>(0.1 + 0.8 * (u(rng) + 1) / 2);
    } else {
      for (Scalar& v : p->value)
        v = static_cast<Scalar>(u(rng));
    }
    for (Scalar& v : p->velocity)
      v = static_cast<Scalar>(u(rng));
  }
  std::vector<netmorph::nn::layer<Scalar>*> stack;
  for (auto& l : m.layers())
    stack.push_back(l.get());
  while (!stack.empty()) {
    auto* l = stack.back();
    stack.pop_back();
    if (auto* bn = netmorph::nn::layer_cast<netmorph::nn::batch_norm>(l)) {
      for (Scalar& v : bn->running_mean())
        v = static_cast<Scalar>(u(rng));
      for (Scalar& v : bn->running_var())
        v = static_cast<Scalar>(pos(rng));
    }
    if (auto* p = netmorph::nn::layer_cast<netmorph::nn::parallel>(l))
      for (auto& path : p->paths())
        for (auto& q : path)
          stack.push_back(q.get());
  }
}

/// A model on 2 x 8 x 8 inputs with every layer kind: convs with and without bias, batch norm
/// with running statistics, P-activations with a != 1, both pools, a parallel block with a
/// residual (empty) path, a concatenation, a gate (mul), dropout, flatten, dense layers with and
/// without bias. Random sizes.
template <typename Scalar>
netmorph::nn::model<Scalar> every_kind_model(std::mt19937_64& rng) {
  namespace nn = netmorph::nn;
  using netmorph::activation_fn;
  using netmorph::activation_kind;
  const idx c = draw(rng, 2, 4), k = draw_odd(rng, 1, 3), hidden = draw(rng, 3, 6);
  nn::model<Scalar> m({2, 8, 8});
  m.add(nn::conv2d<Scalar>::he(2, c, k, rng), "features.0");
  m.add(nn::batch_norm<Scalar>(netmorph::batch_norm_weights<Scalar>::identity(c, 1e-3), 0.05),
        "features.1");
  m.add(nn::p_activation<Scalar>(netmorph::make_p_activation({activation_kind::tanh, 0}, 0.3)),
        "features.2");
  // A depthwise convolution without bias (groups = c: one 3x3 filter per channel).
  nn::conv2d<Scalar> nobias(randn<Scalar>({c, 1, 3, 3}, rng), tensor<Scalar>(),
                            netmorph::conv2d_options{1, 1, c});
  std::vector<nn::layer_list<Scalar>> paths(3);
  paths[0].push_back(std::make_unique<nn::conv2d<Scalar>>(nobias));
  paths[0].push_back(
      std::make_unique<nn::activation<Scalar>>(activation_fn{activation_kind::elu, 0.7}));
  paths[1].push_back(std::make_unique<nn::conv2d<Scalar>>(nn::conv2d<Scalar>::he(c, c, 1, rng)));
  paths[1].back()->set_name("block.shortcut");  // a name of its own, kept inside the block
  paths[1].push_back(std::make_unique<nn::p_activation<Scalar>>(
      netmorph::make_p_activation({activation_kind::leaky_relu, 0.2}, 0.6)));
  m.add(nn::parallel<Scalar>(std::move(paths)), "block");
  // A concatenation of a 1-channel and a (c-1)-channel path, and a squeeze-and-excitation gate.
  std::vector<nn::layer_list<Scalar>> parts(2), gate(2);
  parts[0].push_back(std::make_unique<nn::conv2d<Scalar>>(nn::conv2d<Scalar>::he(c, 1, 1, rng)));
  parts[1].push_back(
      std::make_unique<nn::conv2d<Scalar>>(nn::conv2d<Scalar>::he(c, c - 1, 3, rng)));
  m.add(nn::parallel<Scalar>(std::move(parts), nn::merge_kind::concat), "cat");
  gate[1].push_back(std::make_unique<nn::adaptive_pool2d<Scalar>>(1, 1));
  gate[1].push_back(std::make_unique<nn::conv2d<Scalar>>(nn::conv2d<Scalar>::he(c, c, 1, rng)));
  gate[1].push_back(
      std::make_unique<nn::activation<Scalar>>(activation_fn{activation_kind::hardsigmoid}));
  m.add(nn::parallel<Scalar>(std::move(gate), nn::merge_kind::mul), "gate");
  m.add(nn::pool2d<Scalar>(nn::pool_mode::max, 3, 2, 1));   // 8 x 8 -> 4 x 4, padded
  m.add(nn::pool2d<Scalar>(nn::pool_mode::average, 2, 1));  // -> 3 x 3
  m.add(nn::adaptive_pool2d<Scalar>(2, 3));                 // -> 2 x 3, overlapping rows
  m.add(nn::dropout<Scalar>(0.25));
  m.add(nn::flatten<Scalar>());
  m.add(nn::dense<Scalar>::he(c * 2 * 3, hidden, rng), "classifier.0");
  m.add(nn::activation<Scalar>(activation_fn{activation_kind::gelu, 0}));
  m.add(nn::dense<Scalar>(tensor<Scalar>({3, hidden}), tensor<Scalar>()), "head");
  randomise(m, rng);
  return m;
}

/// Every stored tensor of a model by name, and the velocities, in file order.
template <typename Scalar>
std::vector<std::pair<std::string, tensor<Scalar>>> tensors_of(const netmorph::nn::model<Scalar>& m,
                                                               bool velocities = false) {
  std::vector<std::pair<std::string, tensor<Scalar>>> out;
  netmorph::io::detail::for_each_tensor(m, [&](const std::string& n, const tensor<Scalar>& v,
                                               const netmorph::nn::parameter<Scalar>* p) {
    if (!velocities)
      out.emplace_back(n, v);
    else if (p)
      out.emplace_back(n, p->velocity);
  });
  return out;
}

/// The message of the io_error `f` throws (fails the test when it throws anything else or nothing).
template <typename F>
std::string io_error_message(F&& f) {
  try {
    f();
  } catch (const netmorph::io_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected netmorph::io_error, got another exception: " << e.what());
  }
  FAIL("expected netmorph::io_error, nothing was thrown");
  return {};
}

}  // namespace nmtest

#endif  // NETMORPH_TESTS_IO_SUPPORT_HPP

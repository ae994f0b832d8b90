// Morphs one convolution layer into a child and prints how well the child preserves the
// parent's function on random inputs.
#include <netmorph/netmorph.hpp>

#include <cstdio>
#include <random>

int main() {
  using T = double;
  std::mt19937_64 rng(7);
  // Parent: 3 -> 8 channels, 3x3 kernel, "same" padding, with bias.
  netmorph::conv2d_layer<T> parent{netmorph::tensor<T>::random_normal({8, 3, 3, 3}, rng, 0.3),
                                   netmorph::tensor<T>::random_normal({8}, rng, 0.1),
                                   netmorph::conv2d_params{1, 1}};
  auto x = netmorph::tensor<T>::random_normal({4, 3, 16, 16}, rng);
  auto y = netmorph::conv2d(x, parent);

  // Kernel-size morph: zero-pad the 3x3 filter to 5x5 and grow the padding by one.
  netmorph::conv2d_layer<T> wider{netmorph::pad_kernel(parent.weight, 5, 5), parent.bias,
                                  netmorph::conv2d_params{1, 2}};
  std::printf("kernel 3x3 -> 5x5: relative error %.3e\n",
              netmorph::relative_error(netmorph::conv2d(x, wider), y));

  // Depth morph, IdMorph style: the parent followed by an identity 3x3 layer.
  auto id = netmorph::identity_filter<T>(8, 3);
  auto y2 = netmorph::conv2d(netmorph::conv2d(x, parent), id, netmorph::conv2d_params{1, 1});
  std::printf("parent + identity layer: relative error %.3e\n", netmorph::relative_error(y2, y));
  return 0;
}

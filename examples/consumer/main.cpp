// Uses the installed netmorph package: composes two random filters and checks that two stacked
// convolutions equal the composed one. Exits non-zero on a mismatch.
#include <netmorph/netmorph.hpp>

#include <cstdio>
#include <random>

int main() {
  std::mt19937_64 rng(1);
  auto x = netmorph::tensor<double>::random_normal({1, 2, 9, 9}, rng);
  auto f1 = netmorph::tensor<double>::random_normal({4, 2, 3, 3}, rng);
  auto f2 = netmorph::tensor<double>::random_normal({3, 4, 3, 3}, rng);
  auto stacked = netmorph::conv2d(netmorph::conv2d(x, f1, netmorph::conv2d_options{1, 2}), f2);
  auto direct = netmorph::conv2d(x, netmorph::compose(f2, f1), netmorph::conv2d_options{1, 2});
  const double err = netmorph::relative_error(stacked, direct);
  std::printf("netmorph %d.%d.%d consumer: relative error %.3e\n", NETMORPH_VERSION_MAJOR,
              NETMORPH_VERSION_MINOR, NETMORPH_VERSION_PATCH, err);
  return err <= 1e-12 ? 0 : 1;
}

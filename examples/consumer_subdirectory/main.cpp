// Uses netmorph added with add_subdirectory: a batched dense layer must match a naive loop.
// Exits non-zero on a mismatch.
#include <netmorph/netmorph.hpp>

#include <cmath>
#include <cstdio>
#include <random>

int main() {
  std::mt19937_64 rng(2);
  const netmorph::index_type n = 5, in = 6, out = 4;
  auto x = netmorph::tensor<double>::random_normal({n, in}, rng);
  auto w = netmorph::tensor<double>::random_normal({out, in}, rng);
  auto b = netmorph::tensor<double>::random_normal({out}, rng);
  const auto y = netmorph::dense(x, w, b);
  double worst = 0;
  for (netmorph::index_type s = 0; s < n; ++s) {
    for (netmorph::index_type o = 0; o < out; ++o) {
      double expected = b(o);
      for (netmorph::index_type i = 0; i < in; ++i)
        expected += w(o, i) * x(s, i);
      worst = std::fmax(worst, std::fabs(y(s, o) - expected));
    }
  }
  std::printf("netmorph %d.%d.%d add_subdirectory consumer: max error %.3e\n",
              NETMORPH_VERSION_MAJOR, NETMORPH_VERSION_MINOR, NETMORPH_VERSION_PATCH, worst);
  return worst <= 1e-12 ? 0 : 1;
}

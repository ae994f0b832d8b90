// Uses the installed netmorph package: composes two random filters and checks that two stacked
// convolutions equal the composed one, and that the package version find_package reported
// matches the headers' macros. Exits non-zero on either mismatch.
#include <netmorph/netmorph.hpp>
#ifdef CONSUMER_WITH_IO
#include <netmorph/io.hpp>
#include <netmorph/nn.hpp>
#endif

#include <cstdio>
#include <random>

int main() {
  int status = 0;
#ifdef NETMORPH_FOUND_VERSION_MAJOR
  if (NETMORPH_FOUND_VERSION_MAJOR != NETMORPH_VERSION_MAJOR ||
      NETMORPH_FOUND_VERSION_MINOR != NETMORPH_VERSION_MINOR ||
      NETMORPH_FOUND_VERSION_PATCH != NETMORPH_VERSION_PATCH) {
    std::printf("version mismatch: find_package found %d.%d.%d, version.hpp says %d.%d.%d\n",
                NETMORPH_FOUND_VERSION_MAJOR, NETMORPH_FOUND_VERSION_MINOR,
                NETMORPH_FOUND_VERSION_PATCH, NETMORPH_VERSION_MAJOR, NETMORPH_VERSION_MINOR,
                NETMORPH_VERSION_PATCH);
    status = 1;
  }
#endif
  std::mt19937_64 rng(1);
  auto x = netmorph::tensor<double>::random_normal({1, 2, 9, 9}, rng);
  auto f1 = netmorph::tensor<double>::random_normal({4, 2, 3, 3}, rng);
  auto f2 = netmorph::tensor<double>::random_normal({3, 4, 3, 3}, rng);
  auto stacked = netmorph::conv2d(netmorph::conv2d(x, f1, netmorph::conv2d_options{1, 2}), f2);
  auto direct = netmorph::conv2d(x, netmorph::compose(f2, f1), netmorph::conv2d_options{1, 2});
  const double err = netmorph::relative_error(stacked, direct);
  std::printf("netmorph %d.%d.%d consumer: relative error %.3e\n", NETMORPH_VERSION_MAJOR,
              NETMORPH_VERSION_MINOR, NETMORPH_VERSION_PATCH, err);
  if (!(err <= 1e-12)) status = 1;
#ifdef CONSUMER_WITH_IO
  // netmorph::io: a model saved and loaded back computes the same function.
  auto model = netmorph::nn::parse_architecture<float>("(3:4)", {1, 8, 8});
  netmorph::io::save(model, "consumer_model.safetensors");
  auto loaded = netmorph::io::load<float>("consumer_model.safetensors");
  auto probe = netmorph::tensor<float>::random_normal({2, 1, 8, 8}, rng);
  const double io_err = netmorph::relative_error(loaded.forward(probe), model.forward(probe));
  std::printf("netmorph::io consumer: %zu layers loaded, output difference %.3e\n",
              loaded.names().size(), io_err);
  if (!(io_err == 0.0)) status = 1;
#endif
  return status;
}

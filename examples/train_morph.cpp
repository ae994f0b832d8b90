// Trains a small convolutional network on a synthetic three-class image task, morphs it
// (deeper, wider, larger kernel) while it trains, and shows that the loss continues from where
// the parent stopped instead of jumping.
#include <netmorph/nn.hpp>

#include <cstdio>
#include <iostream>
#include <random>

namespace nn = netmorph::nn;

static nn::dataset<float> make_data(netmorph::index_type n, std::mt19937_64& rng) {
  nn::dataset<float> d{netmorph::tensor<float>({n, 1, 12, 12}), {}};
  std::normal_distribution<double> noise(0.0, 2.5);
  for (netmorph::index_type s = 0; s < n; ++s) {
    const int y = static_cast<int>(s % 3);
    d.labels.push_back(y);
    for (netmorph::index_type i = 0; i < 12; ++i)
      for (netmorph::index_type j = 0; j < 12; ++j) {
        const bool on = y == 0 ? i < 6 : y == 1 ? j < 6 : (i / 3 + j / 3) % 2 == 0;
        d.x(s, 0, i, j) = static_cast<float>((on ? 1.0 : -1.0) + noise(rng));
      }
  }
  return d;
}

int main() {
  std::mt19937_64 rng(1);
  const auto train = make_data(600, rng), test = make_data(300, rng);
  nn::architecture_options arch;
  arch.classes = 3;
  arch.act = netmorph::activation_fn{netmorph::activation_kind::tanh};
  auto model = nn::parse_architecture<float>("(3:8)(3:8)", {1, 12, 12}, arch);
  nn::sgd opt{0.02, 0.9, 1e-4};
  std::cout << "parent " << nn::to_notation(model) << "\n";
  for (int e = 0; e < 3; ++e)
    nn::train_epoch(model, train, opt, 32, e, &std::cout);
  const auto before = nn::evaluate(model, test);

  netmorph::deepen_options d;
  d.mid_channels = 24;  // wide enough for a dense 3x3 F2 (the report says when it is not)
  d.k1 = 3;
  d.k2 = 3;
  // Layers are addressed by name; the layers of "(3:8)(3:8)" are 0 conv, 1 tanh, 2 pool, 3 conv,
  // ... and a morph names its new layers predictably ("3" becomes "3.0", "3.1", "3.2").
  const auto r1 = nn::deepen(model, "3", d);  // the second convolution, behind tanh
  netmorph::widen_options w;
  w.new_channels = 12;
  const auto r2 = nn::widen(model, "0", w);  // into "3.0", the first child of the deepened layer
  netmorph::grow_kernel_options g;
  g.new_kernel = 5;
  const auto r3 = nn::grow_kernel(model, "0", g);
  const auto after = nn::evaluate(model, test);
  std::printf("child %s\n", nn::to_notation(model).c_str());
  std::printf("morph errors: deepen %.2e, widen %.2e, kernel %.2e; test loss %.6f -> %.6f\n",
              *r1.relative_output_error, *r2.relative_output_error, *r3.relative_output_error,
              before.loss, after.loss);
  std::cout << r1.summary();
  for (int e = 3; e < 6; ++e)
    nn::train_epoch(model, train, opt, 32, e, &std::cout);
  const auto final_stats = nn::evaluate(model, test);
  std::printf("test accuracy: parent %.3f, child after 3 more epochs %.3f\n", before.accuracy,
              final_stats.accuracy);
  return *r1.relative_output_error < 1e-4 && *r2.relative_output_error < 1e-4 &&
                 *r3.relative_output_error < 1e-4
             ? 0
             : 1;
}

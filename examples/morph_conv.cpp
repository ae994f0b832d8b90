// The main demo: deepen one trained-looking convolution layer into two, with NetMorph and with
// the IdMorph baseline, and print how well each child preserves the parent's function.
#include <netmorph/netmorph.hpp>

#include <cstdio>
#include <iostream>
#include <random>
#include <string>

int main() {
  using T = double;
  std::mt19937_64 rng(7);
  // Parent: 16 -> 32 channels, 3x3 kernel, "same" padding, with bias.
  netmorph::conv2d_weights<T> parent{netmorph::tensor<T>::random_normal({32, 16, 3, 3}, rng, 0.1),
                                     netmorph::tensor<T>::random_normal({32}, rng, 0.1),
                                     netmorph::conv2d_options{1, 1}};

  // NetMorph: G (32,16,3,3) -> F1 (96,16,3,3) then F2 (32,96,3,3). Condition (7) holds, so
  // Algorithm 1 is exact in one step; the first layer's padding grows so borders stay exact.
  netmorph::deepen_options opt;
  opt.mid_channels = 96;
  opt.k1 = 3;
  opt.k2 = 3;
  auto child = netmorph::deepen(parent, opt);
  std::cout << "== NetMorph, exact borders\n" << child.report.summary();

  // The same morph with plain "same" paddings on both child layers: exact inside, not at the
  // border; the report states the measured error.
  opt.padding = netmorph::depth_padding::same;
  auto same = netmorph::deepen(parent, opt);
  std::cout << "\n== NetMorph, 'same' paddings (approximate option)\n"
            << "output error     relative " << *same.report.relative_output_error << "\n";
  for (const std::string& note : same.report.notes)
    std::cout << note << "\n";

  // IdMorph (Net2Net's deeper op): exact, but its identity filter is almost all zeros.
  netmorph::deepen_options id;
  id.algorithm = netmorph::depth_algorithm::idmorph;
  id.k2 = 3;
  auto idm = netmorph::deepen(parent, id);
  std::cout << "\n== IdMorph baseline\n" << idm.report.summary();

  // Check on a fresh input, independently of the reports.
  auto x = netmorph::tensor<T>::random_normal({2, 16, 20, 20}, rng);
  auto y = netmorph::conv2d(x, parent);
  auto z = netmorph::forward(x, child);  // first layer, P-activation at a = 1, second layer
  const double err = netmorph::relative_error(z, y);
  std::printf("\nfunction-preservation error of the NetMorph child on a fresh 20x20 input: %.3e\n",
              err);
  return err <= 1e-9 ? 0 : 1;
}

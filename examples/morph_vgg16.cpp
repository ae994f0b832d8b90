// Paper Table 2's VGG16 morph at full size, with random weights (no training; ImageNet cannot be
// had here): VGG16 on 3 x 224 x 224 (13 convolutions, 4096-4096-1000 classifier, 138 M
// parameters) gets `(3:Cx4)(1:C)` in each of its first three groups: the group's last 3x3
// convolution is deepened (K2 = 3) until the group has four 3x3 convolutions, then once more with
// K2 = 1. Prints each morph's time and measured function-preservation error (the whole model's,
// on 4 random inputs, as nn::deepen reports it) and, at the end, the error of the whole child
// against the parent on fresh inputs. --quick: the same on 3 x 32 x 32 with every width / 8.
//
//   build/examples/morph_vgg16 [--quick] [--inputs=N]
#include "experiment.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using namespace experiment;

const char* const usage = "usage: morph_vgg16 [--quick] [--inputs=N]\n";

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse_options(argc, argv, usage, {"inputs"});
  const int div = o.quick ? 8 : 1;
  const index_type size = o.quick ? 32 : 224;
  auto c = [&](int ch) { return std::to_string(ch / div); };
  const std::string notation = "[(3:" + c(64) + "x2)][(3:" + c(128) + "x2)][(3:" + c(256) +
                               "x3)][(3:" + c(512) + "x3)][(3:" + c(512) + "x3)]";
  nn::architecture_options t;
  t.act = netmorph::activation_fn{netmorph::activation_kind::relu};
  t.dense_head = {4096 / div, 4096 / div};
  t.classes = o.quick ? 10 : 1000;
  t.seed = 16;
  const auto t0 = std::chrono::steady_clock::now();
  model parent = nn::parse_architecture<Scalar>(notation, {3, size, size}, t);
  index_type params = 0;
  for (auto* p : parent.parameters())
    params += p->value.size();
  std::printf("VGG16%s %s on 3x%lldx%lld: %.1f M parameters, %.2f GFLOPs per image\n",
              o.quick ? " (quick: widths / 8)" : "", notation.c_str(), (long long)size,
              (long long)size, double(params) / 1e6, forward_flops(parent) / 1e9);
  model child = parent;
  double total = 0;
  bool exact = true;
  std::printf("%-8s %-10s %-10s %8s %12s %12s\n", "group", "layer", "new", "seconds", "rel. error",
              "max error");
  for (int g = 0; g < 3; ++g) {
    // The group's convolutions: the top-level conv2d layers between pooling g-1 and g.
    auto group = [&] {
      std::vector<std::string> names;
      int seen = 0;
      for (const auto& l : child.layers()) {
        if (l->kind() == nn::layer_kind::pool2d) ++seen;
        if (seen == g && l->kind() == nn::layer_kind::conv2d) names.push_back(l->name());
      }
      return names;
    };
    for (;;) {
      const std::vector<std::string> names = group();
      const bool more_3x3 = names.size() < 4;
      netmorph::deepen_options d;
      d.k2 = more_3x3 ? 3 : 1;
      d.seed = std::uint64_t(100 * g + names.size());
      const netmorph::morph_report r = nn::deepen(child, names.back(), d);
      exact = exact && r.exact && r.relative_output_error.value_or(1.0) <= 1e-4;
      total += r.seconds;
      std::printf("%-8d %-10s %-10s %8.2f %12.2e %12.2e\n", g + 1, names.back().c_str(),
                  more_3x3 ? "(3:C)" : "(1:C)", r.seconds, r.relative_output_error.value_or(-1),
                  r.max_output_error.value_or(-1));
      std::fflush(stdout);
      if (!more_3x3) break;
    }
  }
  std::printf("child %s\n", nn::to_notation(child).c_str());
  // The whole child against the parent on fresh inputs, in inference mode.
  const index_type inputs = index_type(o.number("inputs", 2));
  std::mt19937_64 rng(7);
  const auto x = netmorph::tensor<Scalar>::random_normal({inputs, 3, size, size}, rng);
  const auto yp = parent.forward(x, false), yc = child.forward(x, false);
  const double err = netmorph::relative_error(yc, yp);
  std::printf(
      "morphs %.1f s in all; whole child vs parent on %lld fresh inputs: relative error "
      "%.2e (float32); %.1f s wall in all\n",
      total, (long long)inputs, err,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (!exact || !(err <= 1e-4)) {
    std::printf("FAILED: a morph is not exact within 1e-4\n");
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "morph_vgg16: %s\n", e.what());
  return 2;
}

#include "support/test_support.hpp"

#include <netmorph/nn/notation.hpp>

using nmtest::idx;
namespace nn = netmorph::nn;

TEST_CASE("the architecture notation round-trips and names the position of errors",
          "[nn][notation]") {
  nn::architecture_options t;
  auto m = nn::parse_architecture<double>("[(5:32x4)(1:32)]x2[(5:64x4)(1:64)]", {1, 28, 28}, t);
  REQUIRE(nn::to_notation(m) == "[(5:32x4)(1:32)]x2[(5:64x4)(1:64)]");
  idx convs = 0, pools = 0;
  for (idx i = 0; i < m.size(); ++i) {
    convs += m.at(i).kind() == nn::layer_kind::conv2d;
    pools += m.at(i).kind() == nn::layer_kind::pool2d;
  }
  REQUIRE(convs == 15);
  REQUIRE(pools == 3);
  REQUIRE(m.output_shape() == netmorph::shape_type{10});
  auto q = nn::parse_architecture<float>(" (3:16) ( 3 : 16 x 2 ) ", {3, 16, 16}, t);
  REQUIRE(nn::to_notation(q) == "(3:16)[(3:16x2)]");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5 32)", {1, 28, 28}),
                         netmorph::value_error,
                         "parse_architecture: expected ':' at position 3 ('3') in '(5 32)'");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5:32", {1, 28, 28}),
                         netmorph::value_error,
                         "parse_architecture: expected ')' at position 5 (end) in '(5:32'");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5:0)", {1, 28, 28}),
                         netmorph::value_error,
                         "parse_architecture: expected a channel count >= 1 at position 3");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5:32)x", {1, 28, 28}),
                         netmorph::value_error,
                         "parse_architecture: expected '(' or '[' at position 6 ('x')");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("[]", {1, 28, 28}), netmorph::value_error,
                         "parse_architecture: empty group before position 2");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("", {1, 28, 28}), netmorph::value_error,
                         "parse_architecture: no layers in ''");
  NM_REQUIRE_THROWS_WITH(nn::parse_architecture<double>("(5:32)", {28, 28}), netmorph::shape_error,
                         "parse_architecture: input must be (C, H, W), got (28, 28)");
}

TEST_CASE("the notation printer shows parallel blocks as {path+path}, {path|path}, {path*path}",
          "[nn][notation]") {
  std::mt19937_64 rng(3);
  auto m = nn::parse_architecture<double>("(3:4)", {1, 8, 8});
  std::vector<nn::layer_list<double>> paths(2);
  paths[0].push_back(std::make_unique<nn::conv2d<double>>(netmorph::tensor<double>({4, 4, 3, 3}),
                                                          netmorph::tensor<double>(),
                                                          netmorph::conv2d_options{1, 1}));
  paths[0].push_back(std::make_unique<nn::conv2d<double>>(netmorph::tensor<double>({4, 4, 1, 1}),
                                                          netmorph::tensor<double>(),
                                                          netmorph::conv2d_options{}));
  nn::model<double> n({1, 8, 8});
  n.add(nn::conv2d<double>::he(1, 4, 3, rng));
  n.add(nn::parallel<double>(std::move(paths)));
  n.add(nn::conv2d<double>::he(4, 2, 5, rng));
  REQUIRE(nn::to_notation(n) == "(3:4){(3:4)(1:4)+}(5:2)");
  REQUIRE(nn::to_notation(m) == "(3:4)");
  // Nested blocks, concatenations and gates: a DenseNet layer holding a squeeze-and-excitation
  // gate.
  std::vector<nn::layer_list<double>> gate(2), dense(2);
  gate[1].push_back(std::make_unique<nn::adaptive_pool2d<double>>(1, 1));
  gate[1].push_back(std::make_unique<nn::conv2d<double>>(nn::conv2d<double>::he(2, 2, 1, rng)));
  dense[1].push_back(std::make_unique<nn::conv2d<double>>(nn::conv2d<double>::he(2, 2, 3, rng)));
  dense[1].push_back(std::make_unique<nn::parallel<double>>(std::move(gate), nn::merge_kind::mul));
  n.add(nn::parallel<double>(std::move(dense), nn::merge_kind::concat));
  REQUIRE(nn::to_notation(n) == "(3:4){(3:4)(1:4)+}(5:2){|(3:2){*(1:2)}}");
}

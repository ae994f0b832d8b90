// netmorph::io architecture JSON: what architecture_json writes, and every malformed description
// or tensor set refused by model_from_architecture with a message naming where.

#include "support/io_support.hpp"

#include <netmorph/io.hpp>

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

using namespace nmtest;
namespace io = netmorph::io;
namespace nn = netmorph::nn;
using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {

/// A conv (bias), relu, flatten, dense model on 1 x 4 x 4 and its tensors.
struct small_model {
  nn::model<double> m{{1, 4, 4}};
  small_model() {
    std::mt19937_64 rng = make_rng(11);
    m.add(nn::conv2d<double>::he(1, 2, 3, rng), "conv");
    m.add(nn::activation<double>({netmorph::activation_kind::relu, 0}), "act");
    m.add(nn::flatten<double>(), "flat");
    m.add(nn::dense<double>::he(32, 3, rng), "fc");
  }
  json arch() const { return json::parse(io::architecture_json(m)); }
  std::vector<io::named_tensor<double>> tensors() const {
    std::vector<io::named_tensor<double>> out;
    for (auto& t : tensors_of(m))
      out.push_back({t.first, t.second});
    return out;
  }
};

std::string build_error(const json& arch, std::vector<io::named_tensor<double>> tensors) {
  const std::string msg = io_error_message(
      [&] { io::model_from_architecture<double>(arch.dump(), std::move(tensors), "src"); });
  CHECK_THAT(msg, Contains("netmorph::io::model_from_architecture: 'src': "));
  return msg;
}

}  // namespace

TEST_CASE("architecture_json describes every layer in order with its hyper-parameters",
          "[io][architecture]") {
  std::mt19937_64 rng = make_rng(12);
  const nn::model<float> m = every_kind_model<float>(rng);
  const json j = json::parse(io::architecture_json(m));
  CHECK(j["input_shape"] == json::array({2, 8, 8}));
  const json& l = j["layers"];
  REQUIRE(l.size() == m.layers().size());
  CHECK(l[0]["name"] == "features.0");
  CHECK(l[0]["kind"] == "conv2d");
  CHECK(l[0]["in_channels"] == 2);
  CHECK(l[0]["bias"] == true);
  CHECK_FALSE(l[0].contains("groups"));  // written only for a grouped layer
  CHECK(l[1]["kind"] == "batch_norm");
  CHECK(l[1]["eps"] == 1e-3);
  CHECK(l[1]["momentum"] == 0.05);
  CHECK(l[2]["kind"] == "p_activation");
  CHECK(l[2]["fn"] == "tanh");
  CHECK(l[3]["kind"] == "parallel");
  CHECK(l[3]["paths"].size() == 3);
  CHECK(l[3]["paths"][0][0]["name"] == "block.path0.0");
  CHECK(l[3]["paths"][0][0]["bias"] == false);
  CHECK(l[3]["paths"][0][0]["groups"] == l[0]["out_channels"]);  // depthwise
  CHECK(l[3]["paths"][0][0]["in_channels"] == l[0]["out_channels"]);
  CHECK(l[3]["paths"][0][1]["fn"] == "elu");
  CHECK(l[3]["paths"][0][1]["param"] == 0.7);
  CHECK(l[3]["paths"][1][0]["name"] == "block.shortcut");
  CHECK(l[3]["paths"][1][1]["name"] == "block.path1.1");
  CHECK(l[3]["paths"][2].empty());
  CHECK_FALSE(l[3].contains("merge"));  // written only when not "add"
  CHECK(l[4]["merge"] == "concat");
  CHECK(l[4]["paths"][1][0]["name"] == "cat.path1.0");
  CHECK(l[5]["merge"] == "mul");
  CHECK(l[5]["paths"][0].empty());
  CHECK(l[6]["mode"] == "max");
  CHECK(l[6]["window"] == 3);
  CHECK(l[6]["padding"] == 1);
  CHECK(l[7]["mode"] == "average");
  CHECK(l[7]["padding"] == 0);
  CHECK(l[8]["kind"] == "adaptive_pool2d");
  CHECK(l[8]["output_size"] == json::array({2, 3}));
  CHECK(l[9]["p"] == 0.25);
  CHECK(l[10]["kind"] == "flatten");
  CHECK(l[11]["kind"] == "dense");
  CHECK(l[13]["bias"] == false);
  for (std::size_t i = 0; i < l.size(); ++i)
    CHECK(l[i]["kind"] == nn::to_string(m.layers()[i]->kind()));
}

TEST_CASE("model_from_architecture rebuilds the model from its description and tensors",
          "[io][architecture]") {
  small_model s;
  nn::model<double> back = io::model_from_architecture<double>(s.arch().dump(), s.tensors());
  CHECK(back.names() == s.m.names());
  CHECK(io::architecture_json(back) == io::architecture_json(s.m));
  std::mt19937_64 rng = make_rng(13);
  const tensor<double> x = randn<double>({3, 1, 4, 4}, rng);
  CHECK(back.forward(x) == s.m.forward(x));
}

TEST_CASE("model_from_architecture refuses malformed descriptions with a message",
          "[io][architecture][error]") {
  small_model s;
  json a = s.arch();
  SECTION("not JSON, or not an object") {
    CHECK_THAT(io_error_message([&] { io::model_from_architecture<double>("{", {}, "src"); }),
               Contains("'src': the architecture JSON is not valid JSON"));
    CHECK_THAT(build_error(json::array(), s.tensors()),
               Contains("architecture: must be a JSON object, got array"));
  }
  SECTION("groups that do not split the channels") {
    a["layers"][0]["groups"] = 2;  // conv 1 -> 2
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[0] ('conv'): in_channels 1 and out_channels 2 must split into "
                        "groups = 2"));
    a["layers"][0]["groups"] = 0;
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[0] ('conv').groups: must be an integer in [1, "));
  }
  SECTION("wrong types") {
    a["layers"][0]["kernel"] = "3";
    CHECK_THAT(
        build_error(a, s.tensors()),
        Contains("layers[0] ('conv').kernel: must be an integer in [1, 2147483647], got \"3\""));
    a = s.arch();
    a["layers"][0]["bias"] = 1;
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[0] ('conv').bias: must be true or false, got 1"));
    a = s.arch();
    a["input_shape"] = {1, -4, 4};
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("architecture.input_shape[1]: must be an integer"));
    a = s.arch();
    a["layers"] = json::object();
    CHECK_THAT(build_error(a, s.tensors()), Contains("layers must be an array, got object"));
    a = s.arch();
    a["layers"][1]["param"] = "x";
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[1] ('act').param: must be a finite number, got \"x\""));
    a = s.arch();
    a["layers"][1]["name"] = 7;
    CHECK_THAT(build_error(a, s.tensors()), Contains("layers[1].name: must be a string, got 7"));
    a = s.arch();
    a["layers"][0]["stride"] = 1e30;
    CHECK_THAT(build_error(a, s.tensors()), Contains("('conv').stride: must be an integer"));
  }
  SECTION("unknown kinds, activations and fields; missing fields") {
    a["layers"][1]["kind"] = "lstm";
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[1] ('act').kind: unknown layer kind 'lstm'"));
    a = s.arch();
    a["layers"][1]["fn"] = "swish";
    CHECK_THAT(build_error(a, s.tensors()), Contains("('act').fn: unknown activation 'swish'"));
    // The message lists every name (netmorph::activation_kinds), and each of them is read.
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("'swish' (" + netmorph::activation_kind_names() + ")"));
    for (const netmorph::activation_kind k : netmorph::activation_kinds) {
      a["layers"][1]["fn"] = netmorph::to_string(k);
      const nn::model<double> back =
          io::model_from_architecture<double>(a.dump(), s.tensors(), "src");
      CHECK(nn::layer_cast<nn::activation>(&back.find("act"))->fn().kind == k);
    }
    a = s.arch();
    a["layers"][2]["units"] = 3;
    CHECK_THAT(build_error(a, s.tensors()), Contains("layers[2] ('flat'): unknown field 'units'"));
    a = s.arch();
    a["layers"][3].erase("out_features");
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[3] ('fc'): missing field 'out_features'"));
    a = s.arch();
    a["extra"] = 1;
    CHECK_THAT(build_error(a, s.tensors()), Contains("architecture: unknown field 'extra'"));
  }
  SECTION("names: reserved, duplicated, or off the parallel rule") {
    a["layers"][1]["name"] = "conv";
    CHECK_THAT(build_error(a, s.tensors()), Contains("the layer name 'conv' is used twice"));
    a = s.arch();
    a["layers"][1]["name"] = "__v";
    CHECK_THAT(build_error(a, s.tensors()), Contains("reserved '__'"));
    a = s.arch();
    a["layers"][1] = {{"name", "res"},
                      {"kind", "parallel"},
                      {"paths", {json::array(), {{{"name", "wrong"}, {"kind", "flatten"}}}}}};
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[1] ('res').paths[1][0] ('wrong'): a layer inside the parallel "
                        "block 'res' must have a name starting with 'res.'"));
    a["layers"][1]["paths"][1][0]["name"] = "res.";
    CHECK_THAT(build_error(a, s.tensors()), Contains("must have a name starting with 'res.'"));
    const json drop_x = {{"name", "res.x"}, {"kind", "dropout"}, {"p", 0.0}};
    a["layers"][1]["paths"] = {json::array({drop_x}), json::array({drop_x})};
    CHECK_THAT(build_error(a, s.tensors()), Contains("the layer name 'res.x' is used twice"));
    a["layers"][1]["paths"][1][0]["name"] = "res.y";
    a["layers"][2]["name"] = "res.y";  // a top-level layer after the block
    CHECK_THAT(build_error(a, s.tensors()), Contains("the layer name 'res.y' is used twice"));
  }
  SECTION("pooling fields") {
    a["layers"][2] = {{"name", "pool"}, {"kind", "pool2d"}, {"mode", "max"},
                      {"window", 2},    {"stride", 2},      {"padding", 2}};
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[2] ('pool'): nn::pool2d: padding must be in [0, window / 2 = 1], "
                        "got 2"));
    a["layers"][2] = {{"name", "pool"}, {"kind", "adaptive_pool2d"}, {"output_size", 4}};
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[2] ('pool').output_size: must be an array [height, width], got 4"));
    a["layers"][2]["output_size"] = {2, 0};
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[2] ('pool').output_size[1]: must be an integer in [1, "));
  }
  SECTION("values and shapes the layers refuse") {
    a["layers"][3]["in_features"] = 31;
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[3] ('fc'): tensor 'fc.weight' has shape (3, 32), the architecture "
                        "needs (3, 31)"));
    a = s.arch();
    a["layers"][0]["padding"] = 0;  // conv gives 2 x 2 x 2 = 8 features, not 32
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[3] ('fc'): nn::dense: input has 8 features"));
    a = s.arch();
    a["layers"][1] = {{"name", "act"}, {"kind", "dropout"}, {"p", 1.5}};
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("layers[1] ('act'): nn::dropout: p must be in [0, 1)"));
    a = s.arch();
    a["layers"][1] = {
        {"name", "pool"}, {"kind", "pool2d"}, {"mode", "max"}, {"window", 9}, {"stride", 1}};
    CHECK_THAT(build_error(a, s.tensors()), Contains("layers[1] ('pool'): nn::pool2d"));
    a = s.arch();
    a["layers"][1] = {
        {"name", "pool"}, {"kind", "pool2d"}, {"mode", "min"}, {"window", 2}, {"stride", 1}};
    CHECK_THAT(build_error(a, s.tensors()),
               Contains("('pool').mode: must be \"max\" or \"average\""));
  }
  SECTION("tensors missing, extra, duplicated or not finite") {
    auto t = s.tensors();
    t.erase(t.begin() + 1);  // conv.bias
    CHECK_THAT(build_error(a, t),
               Contains("the architecture needs the tensor 'conv.bias', which is missing"));
    t = s.tensors();
    t.push_back({"fc.extra", tensor<double>({1})});
    CHECK_THAT(build_error(a, t),
               Contains("the tensor 'fc.extra' is not part of the architecture"));
    t = s.tensors();
    t.push_back(t.front());
    CHECK_THAT(build_error(a, t), Contains("the tensor 'conv.weight' is given twice"));
    t = s.tensors();
    t[2].value(1, 5) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THAT(build_error(a, t),
               Contains("layers[3] ('fc'): tensor 'fc.weight' holds nan at flat index 37"));
  }
  SECTION("a p_activation a outside [0, 1]") {
    a["layers"][1] = {{"name", "act"}, {"kind", "p_activation"}, {"fn", "tanh"}, {"param", 0}};
    auto t = s.tensors();
    t.push_back({"act.a", tensor<double>({1}, 1.5)});
    CHECK_THAT(build_error(a, t),
               Contains("layers[1] ('act'): make_p_activation: a must be in [0, 1]"));
  }
}

// netmorph::io save/load: round trips of models with every layer kind in float and double as F32
// and F64, velocities, F16/BF16 files, atomic saves, and load's refusals.

#include "support/io_support.hpp"

#include <netmorph/io.hpp>

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#if defined(__unix__)
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <csignal>
#endif

using namespace nmtest;
namespace io = netmorph::io;
namespace nn = netmorph::nn;
using Catch::Matchers::Contains;

namespace {

template <typename Scalar>
void require_same_model(nn::model<Scalar>& a, nn::model<Scalar>& b, bool bit_exact) {
  REQUIRE(a.names() == b.names());
  REQUIRE(io::architecture_json(a) == io::architecture_json(b));
  const auto ta = tensors_of(a), tb = tensors_of(b);
  REQUIRE(ta.size() == tb.size());
  for (std::size_t i = 0; i < ta.size(); ++i) {
    CAPTURE(ta[i].first);
    CHECK(ta[i].first == tb[i].first);
    if (bit_exact) CHECK(ta[i].second == tb[i].second);
  }
  std::mt19937_64 rng = make_rng(99);
  const tensor<Scalar> x = randn<Scalar>({3, 2, 8, 8}, rng);
  const tensor<Scalar> ya = a.forward(x), yb = b.forward(x);
  if (bit_exact)
    CHECK(ya == yb);
  else
    CHECK(netmorph::relative_error(yb, ya) <= 1e-5);
}

bool all_zero(const std::vector<std::pair<std::string, tensor<double>>>& v) {
  for (const auto& t : v)
    for (double x : t.second)
      if (x != 0) return false;
  return true;
}

}  // namespace

TEMPLATE_TEST_CASE("save then load gives the same model, bit-exact in a lossless dtype",
                   "[io][model][property]", float, double) {
  for (int trial = 0; trial < 4; ++trial) {
    std::mt19937_64 rng = make_rng(100 + std::uint64_t(trial));
    CAPTURE(trial);
    nn::model<TestType> m = every_kind_model<TestType>(rng);
    temp_path f("model");
    for (io::dtype d : {io::dtype::float32, io::dtype::float64}) {
      CAPTURE(io::to_string(d));
      io::save(m, f.path, {d, false});
      nn::model<TestType> back = io::load<TestType>(f.path);
      const bool lossless = d == io::dtype::float64 || std::is_same<TestType, float>::value;
      require_same_model(m, back, lossless);
      if (!lossless) {  // F32 of a double model: the float values, widened exactly
        const auto ta = tensors_of(m), tb = tensors_of(back);
        for (std::size_t i = 0; i < ta.size(); ++i)
          CHECK(tb[i].second == ta[i].second.template cast<float>().template cast<TestType>());
      }
    }
    io::save(m, f.path);  // the default dtype is the model's scalar
    nn::model<TestType> back = io::load<TestType>(f.path);
    require_same_model(m, back, true);
    // A float file read into a double model and back.
    nn::model<double> wide = io::load<double>(f.path);
    CHECK(wide.names() == m.names());
  }
}

TEMPLATE_TEST_CASE("velocities round-trip when asked", "[io][model]", float, double) {
  std::mt19937_64 rng = make_rng(200);
  nn::model<TestType> m = every_kind_model<TestType>(rng);
  temp_path f("velocities");
  io::save(m, f.path, {std::nullopt, true});
  const auto names = io::read_safetensors<TestType>(f.path).tensors;
  bool has_prefixed = false;
  for (const auto& t : names)
    has_prefixed = has_prefixed || t.name == std::string(io::velocity_prefix) + "features.0.weight";
  CHECK(has_prefixed);
  nn::model<TestType> back = io::load<TestType>(f.path);
  const auto va = tensors_of(m, true), vb = tensors_of(back, true);
  REQUIRE(va.size() == vb.size());
  for (std::size_t i = 0; i < va.size(); ++i)
    CHECK(va[i].second == vb[i].second);
  nn::model<double> skipped = io::load<double>(f.path, {false});
  CHECK(all_zero(tensors_of(skipped, true)));
  io::save(m, f.path);  // without velocities: they load as zeros
  CHECK(all_zero(tensors_of(io::load<double>(f.path), true)));
}

TEST_CASE("load reads F16 and BF16 files written by hand", "[io][model]") {
  // dense 3 -> 2 with bias; values exactly representable in both formats.
  const std::vector<float> w = {0.5f, -1.25f, 2.0f, 0.0f, -0.375f, 3.0f}, b = {1.5f, -0.0625f};
  const std::string arch =
      R"({"input_shape":[3],"layers":[{"name":"fc","kind":"dense","in_features":3,)"
      R"("out_features":2,"bias":true}]})";
  for (const char* type : {"F16", "BF16"}) {
    CAPTURE(type);
    auto encode = [&](float x) -> std::uint16_t {
      std::uint32_t bits;
      std::memcpy(&bits, &x, 4);
      if (std::string(type) == "BF16") return static_cast<std::uint16_t>(bits >> 16);
      if (x == 0) return static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
      const std::uint32_t e = ((bits >> 23) & 0xff) - 112, m = (bits >> 13) & 0x3ff;
      return static_cast<std::uint16_t>(((bits >> 16) & 0x8000u) | (e << 10) | m);
    };
    std::vector<std::uint16_t> data;
    for (float x : w)
      data.push_back(encode(x));
    for (float x : b)
      data.push_back(encode(x));
    nlohmann::json h;
    h["__metadata__"] = {{"netmorph.format", "1"}, {"netmorph.architecture", arch}};
    h["fc.weight"] = {{"dtype", type}, {"shape", {2, 3}}, {"data_offsets", {0, 12}}};
    h["fc.bias"] = {{"dtype", type}, {"shape", {2}}, {"data_offsets", {12, 16}}};
    temp_path f("half_model");
    write_bytes(f.path, safetensors_bytes(h.dump(), le_bytes(data)));
    nn::model<double> m = io::load<double>(f.path);
    const auto& fc = *nn::layer_cast<nn::dense>(&m.find("fc"));
    CHECK(fc.weight().value == tensor<double>({2, 3}, std::vector<double>(w.begin(), w.end())));
    CHECK(fc.bias().value == tensor<double>({2}, std::vector<double>(b.begin(), b.end())));
    nn::model<float> mf = io::load<float>(f.path);
    CHECK(nn::layer_cast<nn::dense>(&mf.find("fc"))->weight().value ==
          tensor<float>({2, 3}, std::vector<float>(w)));
  }
}

TEST_CASE("load refuses files that are not the model they claim", "[io][model][error]") {
  std::mt19937_64 rng = make_rng(300);
  nn::model<double> m = every_kind_model<double>(rng);
  temp_path f("bad_model"), g("bad_model_out");
  io::save(m, f.path, {std::nullopt, true});
  io::safetensors_content<double> c = io::read_safetensors<double>(f.path);
  auto load_error = [&](const io::safetensors_content<double>& content) {
    io::write_safetensors(g.path, content);
    const std::string msg = io_error_message([&] { io::load<double>(g.path); });
    CHECK_THAT(msg, Contains("netmorph::io::load: '" + g.path + "': "));
    return msg;
  };
  SECTION("not a netmorph file") {
    auto d = c;
    d.metadata.erase(io::architecture_key);
    CHECK_THAT(load_error(d), Contains("__metadata__ has no 'netmorph.architecture'"));
    d = c;
    d.metadata[io::format_key] = "2";
    CHECK_THAT(load_error(d), Contains("unsupported netmorph.format '2'"));
  }
  SECTION("a tensor missing from or extra to the architecture") {
    auto d = c;
    d.tensors.erase(d.tensors.begin() + 2);  // features.1.weight
    CHECK_THAT(load_error(d),
               Contains("the architecture needs the tensor 'features.1.weight', which the file "
                        "does not have"));
    d = c;
    d.tensors.push_back({"classifier.0.scale", tensor<double>({1})});
    CHECK_THAT(load_error(d),
               Contains("the tensor 'classifier.0.scale' is not part of the architecture"));
    d = c;
    d.tensors[0].value = tensor<double>({1, 1, 1, 1});
    CHECK_THAT(load_error(d), Contains("tensor 'features.0.weight' has shape (1, 1, 1, 1), the "
                                       "architecture needs"));
  }
  SECTION("NaN weights and velocities") {
    auto d = c;
    d.tensors[3].value.data()[1] = std::numeric_limits<double>::quiet_NaN();
    CHECK_THAT(load_error(d), Contains("layers[1] ('features.1'): tensor 'features.1.bias' holds "
                                       "nan at flat index 1"));
    d = c;
    d.tensors.back().value.data()[0] = std::numeric_limits<double>::infinity();
    CHECK_THAT(load_error(d), Contains("holds inf at flat index 0 (velocities must be finite)"));
  }
  SECTION("velocities for only some parameters") {
    auto d = c;
    d.tensors.pop_back();
    CHECK_THAT(load_error(d), Contains("the file has velocities for some parameters but not '"));
  }
  SECTION("an architecture that is not JSON") {
    auto d = c;
    d.metadata[io::architecture_key] = "[";
    CHECK_THAT(load_error(d), Contains("the architecture JSON is not valid JSON"));
  }
}

TEST_CASE("save refuses non-finite weights and reserved names, leaving the file as it was",
          "[io][model][error]") {
  std::mt19937_64 rng = make_rng(400);
  nn::model<float> m = every_kind_model<float>(rng);
  temp_path f("keep");
  write_bytes(f.path, "previous contents");
  nn::model<float> bad = m;
  nn::layer_cast<nn::conv2d>(&bad.find("block.path0.0"))->weight().value.data()[4] =
      std::numeric_limits<float>::quiet_NaN();
  CHECK_THAT(io_error_message([&] { io::save(bad, f.path); }),
             Contains("netmorph::io::save: '" + f.path +
                      "': tensor 'block.path0.0.weight' holds nan at flat index 4"));
  nn::model<float> reserved = m;
  reserved.add(nn::activation<float>({netmorph::activation_kind::relu, 0}), "__x");
  CHECK_THAT(io_error_message([&] { io::save(reserved, f.path); }),
             Contains("the layer name '__x' cannot be stored"));
  CHECK_THAT(io_error_message([&] {
               io::save(m, f.path, {io::dtype::bfloat16, false});
             }),
             Contains("netmorph writes F32 or F64, not BF16"));
  CHECK(read_bytes(f.path) == "previous contents");
}

#if defined(__unix__)
TEST_CASE("a save that fails while writing leaves the existing file exactly as it was",
          "[io][model][error]") {
  std::mt19937_64 rng = make_rng(500);
  nn::model<double> m = every_kind_model<double>(rng);
  ::mkdir("io_atomic", 0755);
  const std::string path = "io_atomic/model.safetensors";
  io::save(m, path);
  const std::string before = read_bytes(path);
  REQUIRE(before.size() > 2048);
  nn::model<double> other = m;
  randomise(other, rng);
  // Limit the size of files this process may write: the temporary file's write fails midway.
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  rlimit small = old;
  small.rlim_cur = 1024;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string msg;
  try {
    io::save(other, path);
  } catch (const netmorph::io_error& e) {
    msg = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  CHECK_THAT(msg, Contains("netmorph::io::save: '" + path + "': writing the new ") &&
                      Contains("failed (File too large)"));
  CHECK(read_bytes(path) == before);
  std::vector<std::string> entries;
  if (DIR* d = ::opendir("io_atomic")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') entries.push_back(e->d_name);
    ::closedir(d);
  }
  CHECK(entries == std::vector<std::string>{"model.safetensors"});  // no temporary file left
  io::save(other, path);  // and a save that succeeds replaces it
  nn::model<double> back = io::load<double>(path);
  CHECK(tensors_of(back) == tensors_of(other));
  std::remove(path.c_str());
  ::rmdir("io_atomic");
}
#endif

// Not run by default: CTest's test_io_python_write runs it to leave files (and what they must
// hold) for tests/io/read_safetensors.py, the ten-line struct/json/numpy reader.
TEST_CASE("write files for the Python reader", "[.python_fixture]") {
  const char* dir = std::getenv("NETMORPH_IO_FIXTURE_DIR");
  REQUIRE(dir != nullptr);
#if defined(__unix__)
  ::mkdir(dir, 0755);
#endif
  nlohmann::json expected = nlohmann::json::object();
  std::mt19937_64 rng = make_rng(600);
  auto add = [&](auto m, const std::string& file, io::save_options opt) {
    io::save(m, std::string(dir) + "/" + file, opt);
    nlohmann::json& e = expected[file];
    for (const auto& t : tensors_of(m)) {
      std::vector<double> v(t.second.begin(), t.second.end());
      e[t.first] = {{"shape", t.second.shape()}, {"values", v}};
    }
    e["__architecture__"] = io::architecture_json(m);
    // What the model computes in inference mode on a random batch, for the PyTorch bridge.
    using Scalar = typename std::decay_t<decltype(m.parameters().front()->value)>::scalar_type;
    netmorph::shape_type s = m.input_shape();
    s.insert(s.begin(), 2);
    const tensor<Scalar> x = randn<Scalar>(s, rng);
    const tensor<Scalar> y = m.forward(x, false);
    e["__input__"] = {{"shape", x.shape()}, {"values", std::vector<double>(x.begin(), x.end())}};
    e["__output__"] = {{"shape", y.shape()}, {"values", std::vector<double>(y.begin(), y.end())}};
  };
  add(every_kind_model<float>(rng), "float32.safetensors", {});
  add(every_kind_model<double>(rng), "float64.safetensors", {});
  std::ofstream(std::string(dir) + "/expected.json") << expected.dump();
}

// netmorph::io save/load: round trips of models with every layer kind in float and double as F32
// and F64, velocities, F16/BF16 files, atomic saves, and load's refusals.

#include "support/io_support.hpp"

#include <netmorph/io.hpp>

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
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

/// Save options that store the optimizer state.
io::save_options with_state() {
  io::save_options o;
  o.optimizer_state = true;
  return o;
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
      io::save_options so;
      so.dtype = d;
      io::save(m, f.path, so);
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
  io::save(m, f.path, with_state());
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
  io::save(m, f.path, with_state());
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
  io::save_options bf16;
  bf16.dtype = io::dtype::bfloat16;
  CHECK_THAT(io_error_message([&] { io::save(m, f.path, bf16); }),
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

namespace {

/// conv -> batch norm -> ReLU -> conv -> flatten -> dense, no dropout (whose generator a file
/// does not hold), trained by `steps` full-batch steps on `batches` in turn.
template <typename Scalar>
nn::model<Scalar> resumable_model(std::mt19937_64& rng) {
  nn::model<Scalar> m({2, 6, 6}, rng());
  m.add(nn::conv2d<Scalar>(randn<Scalar>({4, 2, 3, 3}, rng, 0.3), randn<Scalar>({4}, rng, 0.1),
                           netmorph::conv2d_options{1, 1}),
        "conv1");
  m.add(nn::batch_norm<Scalar>(netmorph::batch_norm_weights<Scalar>::identity(4)), "bn1");
  m.add(nn::activation<Scalar>(netmorph::activation_fn{netmorph::activation_kind::relu}), "act1");
  m.add(nn::conv2d<Scalar>(randn<Scalar>({3, 4, 3, 3}, rng, 0.3), randn<Scalar>({3}, rng, 0.1),
                           netmorph::conv2d_options{2, 1}),
        "conv2");
  m.add(nn::flatten<Scalar>(), "flat");
  m.add(nn::dense<Scalar>(randn<Scalar>({3, 27}, rng, 0.2), randn<Scalar>({3}, rng, 0.1)), "fc");
  return m;
}

template <typename Scalar>
void train_steps(nn::model<Scalar>& m, const std::vector<nn::dataset<Scalar>>& batches, int from,
                 int steps, const nn::optimizer& o) {
  for (int s = from; s < from + steps; ++s) {
    const auto& b = batches[static_cast<std::size_t>(s) % batches.size()];
    m.zero_grad();
    m.backward(nn::softmax_cross_entropy(m.forward(b.x, true), b.labels).grad);
    o.step(m);
  }
}

/// Values, buffers and every parameter's optimizer state, compared bit for bit.
template <typename Scalar>
void require_same_training_state(nn::model<Scalar>& a, nn::model<Scalar>& b) {
  REQUIRE(a.names() == b.names());
  const auto ta = tensors_of(a), tb = tensors_of(b);
  REQUIRE(ta.size() == tb.size());
  for (std::size_t i = 0; i < ta.size(); ++i) {
    CAPTURE(ta[i].first);
    REQUIRE(ta[i].second == tb[i].second);
  }
  const auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CAPTURE(i);
    REQUIRE(pa[i]->velocity == pb[i]->velocity);
    REQUIRE(pa[i]->step == pb[i]->step);
    // An Adam state a morph has not started yet is empty in memory and zero in a file.
    const auto same = [](const tensor<Scalar>& x, const tensor<Scalar>& y,
                         const netmorph::shape_type& s) {
      if (x.empty() && y.empty()) return true;
      return x.empty() || y.empty() ? (x.empty() ? y : x) == tensor<Scalar>(s) : x == y;
    };
    REQUIRE(same(pa[i]->exp_avg, pb[i]->exp_avg, pa[i]->value.shape()));
    REQUIRE(same(pa[i]->exp_avg_sq, pb[i]->exp_avg_sq, pa[i]->value.shape()));
  }
}

}  // namespace

TEMPLATE_TEST_CASE(
    "training resumes bit for bit from a file for SGD, Adam and AdamW, across a "
    "morph",
    "[io][model][optimizer]", float, double) {
  const std::vector<nn::optimizer> optimizers = {
      nn::sgd{0.05, 0.9, 1e-3}, nn::adam{1e-2, 0.9, 0.99, 1e-7, 1e-3}, nn::adamw(1e-2, 0.05)};
  for (const nn::optimizer& o : optimizers)
    for (bool morph : {false, true}) {
      CAPTURE(o.kind(), morph);
      std::mt19937_64 rng = make_rng(500);
      nn::model<TestType> m = resumable_model<TestType>(rng);
      std::vector<nn::dataset<TestType>> batches;
      for (int b = 0; b < 3; ++b)
        batches.push_back({randn<TestType>({4, 2, 6, 6}, rng), {0, 1, 2, 1}});
      const int k = 4;
      train_steps(m, batches, 0, k, o);
      if (morph) {  // new parameters (no Adam state yet) beside carried ones
        netmorph::deepen_options d;
        d.seed = 3;
        nn::deepen(m, "conv2", d);
        netmorph::widen_options w;
        w.new_channels = 6;
        w.seed = 4;
        nn::widen(m, "conv1", w);
      }
      nn::model<TestType> straight = m;
      train_steps(straight, batches, k, k, o);
      temp_path f("resume");
      io::save_options so;
      so.optimizer_state = true;
      so.optimizer = o;
      io::save(m, f.path, so);
      nn::model<TestType> back = io::load<TestType>(f.path);
      require_same_training_state(m, back);
      const std::optional<nn::optimizer> settings = io::load_optimizer(f.path);
      REQUIRE(settings);
      REQUIRE(settings->kind() == o.kind());
      REQUIRE(io::detail::optimizer_json(*settings) == io::detail::optimizer_json(o));
      train_steps(back, batches, k, k, *settings);
      require_same_training_state(straight, back);
    }
}

TEST_CASE("optimizer state and settings in files: what is written, and the refusals",
          "[io][model][optimizer][error]") {
  std::mt19937_64 rng = make_rng(501);
  nn::model<double> m = resumable_model<double>(rng);
  const std::vector<nn::dataset<double>> batches = {
      {randn<double>({4, 2, 6, 6}, rng), {0, 1, 2, 1}}};
  train_steps(m, batches, 0, 2, nn::adamw());
  temp_path f("adam_state"), g("adam_state_bad");
  io::save_options so;
  so.optimizer_state = true;
  so.optimizer = nn::adamw();
  io::save(m, f.path, so);
  const io::safetensors_content<double> c = io::read_safetensors<double>(f.path);
  // Velocities that are all zero beside Adam state are not written; the moments and steps are.
  for (const auto& t : c.tensors)
    REQUIRE(t.name.rfind(io::velocity_prefix, 0) == std::string::npos);
  const auto steps = nlohmann::json::parse(c.metadata.at(io::steps_key));
  REQUIRE(steps.at("conv1.weight") == 2);
  REQUIRE(nlohmann::json::parse(c.metadata.at(io::optimizer_key)).at("kind") == "adamw");
  // Without `optimizer_state` nothing of it is written, and a model loads with fresh state.
  io::save(m, g.path);
  REQUIRE(!io::load_optimizer(g.path));
  nn::model<double> fresh = io::load<double>(g.path);
  for (auto* p : fresh.parameters())
    REQUIRE(!p->has_adam_state());
  nn::model<double> skipped = io::load<double>(f.path, {false});
  for (auto* p : skipped.parameters())
    REQUIRE(!p->has_adam_state());

  auto load_error = [&](const io::safetensors_content<double>& content) {
    io::write_safetensors(g.path, content);
    const std::string msg = io_error_message([&] { io::load<double>(g.path); });
    CHECK_THAT(msg, Contains("netmorph::io::load: '" + g.path + "': "));
    return msg;
  };
  auto optimizer_error = [&](const std::string& json) {
    auto d = c;
    d.metadata[io::optimizer_key] = json;
    io::write_safetensors(g.path, d);
    const std::string msg = io_error_message([&] { io::load_optimizer(g.path); });
    CHECK_THAT(msg, Contains("netmorph::io::load_optimizer: '" + g.path + "': "));
    return msg;
  };
  const auto named = [&](const char* prefix, const char* name) {
    for (std::size_t i = 0; i < c.tensors.size(); ++i)
      if (c.tensors[i].name == std::string(prefix) + name) return i;
    FAIL("no tensor " << prefix << name);
    return std::size_t(0);
  };
  SECTION("moments without step counts, or with wrong ones") {
    auto d = c;
    d.metadata.erase(io::steps_key);
    CHECK_THAT(load_error(d), Contains("the file has Adam moments but no 'netmorph.steps'"));
    d.metadata[io::steps_key] = R"({"conv1.weight": 2})";
    CHECK_THAT(load_error(d), Contains("needs a step count >= 0 for 'conv1.bias'"));
    auto all = steps;
    all["conv1.bias"] = -1;
    d.metadata[io::steps_key] = all.dump();
    CHECK_THAT(load_error(d), Contains("needs a step count >= 0 for 'conv1.bias'"));
    all = steps;
    all["conv9.weight"] = 1;
    d.metadata[io::steps_key] = all.dump();
    CHECK_THAT(load_error(d), Contains("has 9 step counts for 8 parameters"));
  }
  SECTION("moments for some parameters, one moment without the other, bad values") {
    auto d = c;
    d.tensors.erase(d.tensors.begin() +
                    static_cast<std::ptrdiff_t>(named(io::exp_avg_prefix, "fc.bias")));
    CHECK_THAT(load_error(d), Contains("the file has Adam first moments for some parameters but "
                                       "not '__netmorph_exp_avg__.fc.bias' (1 missing)"));
    d = c;
    d.tensors.erase(
        std::remove_if(d.tensors.begin(), d.tensors.end(),
                       [](const auto& t) { return t.name.rfind(io::exp_avg_sq_prefix, 0) == 0; }),
        d.tensors.end());
    CHECK_THAT(load_error(d), Contains("the file has Adam first moments without the other"));
    d = c;
    d.tensors[named(io::exp_avg_sq_prefix, "conv2.weight")].value.data()[3] = -1e-3;
    CHECK_THAT(load_error(d), Contains("tensor '__netmorph_exp_avg_sq__.conv2.weight' holds "
                                       "-0.001 at flat index 3 (a second moment is never "
                                       "negative)"));
    d = c;
    d.tensors[named(io::exp_avg_prefix, "fc.weight")].value.data()[0] =
        std::numeric_limits<double>::quiet_NaN();
    CHECK_THAT(load_error(d), Contains("holds nan at flat index 0 (moments must be finite)"));
    d = c;
    d.tensors[named(io::exp_avg_prefix, "fc.weight")].value = tensor<double>({3, 2});
    CHECK_THAT(load_error(d), Contains("tensor '__netmorph_exp_avg__.fc.weight' has shape (3, 2), "
                                       "its parameter has (3, 27)"));
  }
  SECTION("optimizer settings that are not an optimizer's") {
    CHECK_THAT(optimizer_error(R"({"kind": "rmsprop", "lr": 1})"),
               Contains("unknown kind 'rmsprop' (sgd, adam or adamw)"));
    CHECK_THAT(optimizer_error(R"({"kind": "sgd", "lr": 0.1, "momentum": 0.9})"),
               Contains("kind 'sgd' needs the number 'weight_decay'"));
    CHECK_THAT(optimizer_error(
                   R"({"kind": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0, "beta1": 1})"),
               Contains("unknown field 'beta1' for kind 'sgd'"));
    CHECK_THAT(
        optimizer_error(
            R"({"kind": "adam", "lr": 0.1, "beta1": 1.5, "beta2": 0.9, "eps": 1e-8, "weight_decay": 0})"),
        Contains("nn::optimizer: beta1 (in [0, 1)) 1.5 is out of range"));
    CHECK_THAT(optimizer_error(R"({"kind": "adam", "kind": "sgd"})"),
               Contains("the optimizer JSON has the key 'kind' twice"));
    CHECK_THAT(optimizer_error("[1"), Contains("the optimizer JSON is not valid JSON"));
  }
}

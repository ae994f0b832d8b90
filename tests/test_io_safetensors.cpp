// netmorph::io safetensors reader and writer: round trips, F16/BF16 conversion, and every
// malformed file refused with an io_error that names the function, the file and the fault.

#include "support/io_support.hpp"

#include <netmorph/io/safetensors.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace nmtest;
namespace io = netmorph::io;
using Catch::Matchers::Contains;

namespace {

/// Reads `bytes` as a file and returns the io_error's message; it must name the reader and file.
std::string read_error(const std::string& bytes) {
  temp_path f("bad");
  write_bytes(f.path, bytes);
  const std::string msg = io_error_message([&] { io::read_safetensors<double>(f.path); });
  CHECK_THAT(msg, Contains("netmorph::io::read_safetensors") && Contains(f.path));
  return msg;
}

/// One F32 tensor "x" of shape (2) at [0, 8) and "y" of shape (1) at [8, 12).
const std::string valid_header =
    R"({"__metadata__":{"k":"v"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
    R"("y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
const std::string valid_data = le_bytes<float>({1.5f, -2.0f, 0.25f});

}  // namespace

TEMPLATE_TEST_CASE("write_safetensors then read_safetensors is bit-exact in the native dtype",
                   "[io][safetensors]", float, double) {
  std::mt19937_64 rng = make_rng(1);
  io::safetensors_content<TestType> c;
  c.metadata = {{"a", "1"}, {"unicode", "\xc3\xa9t\xc3\xa9"}};
  c.tensors.push_back({"w", randn<TestType>({3, 4, 2}, rng)});
  c.tensors.push_back({"empty", tensor<TestType>({0, 5})});
  c.tensors.push_back({"b", randn<TestType>({7}, rng)});
  temp_path f("roundtrip");
  io::write_safetensors(f.path, c);
  const std::string bytes = read_bytes(f.path);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  CHECK((8 + n) % 8 == 0);  // the data section is 8-byte aligned
  const auto back = io::read_safetensors<TestType>(f.path);
  CHECK(back.metadata == c.metadata);
  REQUIRE(back.tensors.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(back.tensors[i].name == c.tensors[i].name);
    CHECK(back.tensors[i].value == c.tensors[i].value);
  }
}

TEST_CASE("read_safetensors converts between F32 and F64", "[io][safetensors]") {
  std::mt19937_64 rng = make_rng(2);
  io::safetensors_content<double> c;
  c.tensors.push_back({"w", randn<double>({5, 3}, rng)});
  temp_path f("convert");
  io::write_safetensors(f.path, c, io::dtype::float32);
  const auto as_float = io::read_safetensors<float>(f.path);
  CHECK(as_float.tensors[0].value == c.tensors[0].value.cast<float>());
  const auto as_double = io::read_safetensors<double>(f.path);
  CHECK(as_double.tensors[0].value == c.tensors[0].value.cast<float>().cast<double>());
  io::write_safetensors(f.path, as_float, io::dtype::float64);
  CHECK(io::read_safetensors<float>(f.path).tensors[0].value == as_float.tensors[0].value);
}

TEST_CASE("read_safetensors reads F16 and BF16 exactly", "[io][safetensors]") {
  // F16: 1, -2, 65504 (largest), 2^-24 (smallest subnormal), 0.333251953125, -0, inf.
  const std::vector<std::uint16_t> half = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555, 0x8000, 0x7C00};
  const std::vector<double> half_values = {1,
                                           -2,
                                           65504,
                                           std::ldexp(1.0, -24),
                                           0.333251953125,
                                           -0.0,
                                           std::numeric_limits<double>::infinity()};
  // BF16: 1, -5, 0.333984375, 3.3895313892515355e38 (largest).
  const std::vector<std::uint16_t> bf = {0x3F80, 0xC0A0, 0x3EAB, 0x7F7F};
  const std::vector<double> bf_values = {1, -5, 0.333984375, 3.3895313892515355e38};
  const std::string header = R"({"h":{"dtype":"F16","shape":[7],"data_offsets":[0,14]},)"
                             R"("b":{"dtype":"BF16","shape":[2,2],"data_offsets":[14,22]}})";
  temp_path f("half");
  write_bytes(f.path, safetensors_bytes(header, le_bytes(half) + le_bytes(bf)));
  const auto d = io::read_safetensors<double>(f.path);
  const auto s = io::read_safetensors<float>(f.path);
  REQUIRE(d.tensors.size() == 2);
  CHECK(d.tensors[0].name == "h");
  CHECK(d.tensors[1].value.shape() == netmorph::shape_type{2, 2});
  for (std::size_t i = 0; i < half.size(); ++i) {
    CHECK(d.tensors[0].value.data()[i] == half_values[i]);
    CHECK(s.tensors[0].value.data()[i] == static_cast<float>(half_values[i]));
  }
  CHECK(std::signbit(d.tensors[0].value.data()[5]));
  for (std::size_t i = 0; i < bf.size(); ++i)
    CHECK(d.tensors[1].value.data()[i] == bf_values[i]);
  // Every F16 bit pattern widens to the float with the same value.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float x = io::detail::half_to_float(static_cast<std::uint16_t>(h));
    const std::uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double want = e == 0x1f ? (m ? std::nan("") : std::numeric_limits<double>::infinity())
                        : e == 0  ? std::ldexp(double(m), -24)
                                  : std::ldexp(double(m | 0x400), int(e) - 25);
    if (std::isnan(want)) {
      CHECK(std::isnan(x));
    } else {
      CHECK(std::abs(double(x)) == want);
      CHECK(std::signbit(x) == ((h & 0x8000) != 0));
    }
  }
}

TEST_CASE("safetensors_reader reads a file held in memory and scalars as shape (1)",
          "[io][safetensors]") {
  const std::string bytes = safetensors_bytes(
      R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})", le_bytes<double>({2.5}));
  io::safetensors_reader r(bytes.data(), bytes.size(), "buffer");
  REQUIRE(r.tensors().size() == 1);
  CHECK(r.tensors()[0].shape == netmorph::shape_type{1});
  CHECK(r.read<float>(r.tensors()[0])(0) == 2.5f);
  CHECK(r.find("s") != nullptr);
  CHECK(r.find("t") == nullptr);
}

TEST_CASE("read_safetensors refuses malformed files with a message", "[io][safetensors][error]") {
  const std::string ok = safetensors_bytes(valid_header, valid_data);
  {
    temp_path f("valid");
    write_bytes(f.path, ok);
    CHECK(io::read_safetensors<float>(f.path).tensors.size() == 2);
  }
  SECTION("missing file") {
    const std::string msg =
        io_error_message([] { io::read_safetensors<float>("no/such/file.safetensors"); });
    CHECK_THAT(msg, Contains("no/such/file.safetensors") && Contains("cannot open"));
  }
  SECTION("truncated before the header length") {
    CHECK_THAT(read_error(ok.substr(0, 5)), Contains("truncated: 5 bytes"));
  }
  SECTION("header length past the end of the file") {
    CHECK_THAT(read_error(safetensors_bytes(valid_header, "").substr(0, 40)),
               Contains("runs past the end of the file"));
  }
  SECTION("header length beyond 100 MB") {
    std::string b = ok;
    b[4] = 1;  // 2^32 + ...
    CHECK_THAT(read_error(b), Contains("exceeds the limit of 100000000"));
  }
  SECTION("truncated data") {
    CHECK_THAT(read_error(ok.substr(0, ok.size() - 2)),
               Contains("tensor 'y'") && Contains("outside the data section of 10 bytes"));
  }
  SECTION("trailing bytes after the last tensor") {
    CHECK_THAT(read_error(ok + "xxxx"),
               Contains("the tensors end at byte 12 of a data section of 16"));
  }
  SECTION("offsets outside the file") {
    CHECK_THAT(read_error(safetensors_bytes(
                   R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8000]}})", valid_data)),
               Contains("tensor 'x': data_offsets [0, 8000] lie outside"));
  }
  SECTION("overlapping offsets") {
    CHECK_THAT(
        read_error(safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                     valid_data)),
        Contains("tensor 'y': data_offsets [4, 8] overlap the previous tensor"));
  }
  SECTION("non-contiguous offsets") {
    CHECK_THAT(
        read_error(safetensors_bytes(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                     R"("y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                     valid_data)),
        Contains("tensor 'y'") && Contains("leave a gap after byte 4"));
  }
  SECTION("offsets that disagree with the shape") {
    CHECK_THAT(
        read_error(safetensors_bytes(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]},)"
                                     R"("y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                     valid_data)),
        Contains("tensor 'x'") && Contains("hold 8 bytes") && Contains("needs 12"));
  }
  SECTION("offsets in reverse order") {
    CHECK_THAT(read_error(safetensors_bytes(
                   R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", valid_data)),
               Contains("tensor 'x': data_offsets [8, 0]"));
  }
  SECTION("an overflowing shape") {
    // A zero extent makes the element count 0, but the strides would still overflow.
    CHECK_THAT(
        read_error(safetensors_bytes(
            R"({"x":{"dtype":"F32","shape":[0,17179869184,17179869184],"data_offsets":[0,0]}})",
            "")),
        Contains("tensor 'x': shape [0,17179869184,17179869184] has more than "
                 "max_tensor_elements"));
    CHECK_THAT(
        read_error(safetensors_bytes(R"({"x":{"dtype":"F64","shape":[4294967296,4294967296,16],)"
                                     R"("data_offsets":[0,0]}})",
                                     "")),
        Contains("tensor 'x': shape [4294967296,4294967296,16] has more than "
                 "max_tensor_elements"));
    CHECK_THAT(
        read_error(safetensors_bytes(
            R"({"x":{"dtype":"F64","shape":[18446744073709551615],"data_offsets":[0,0]}})", "")),
        Contains("more than max_tensor_elements"));
  }
  SECTION("a negative or fractional extent") {
    CHECK_THAT(read_error(safetensors_bytes(
                   R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "")),
               Contains("tensor 'x': shape[0] must be a non-negative integer, got -1"));
    CHECK_THAT(read_error(safetensors_bytes(
                   R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]}})", "")),
               Contains("got 1.5"));
  }
  SECTION("unknown and unsupported dtypes") {
    CHECK_THAT(read_error(safetensors_bytes(
                   R"({"x":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", "abcd")),
               Contains("tensor 'x' has the unknown dtype 'F99'"));
    CHECK_THAT(read_error(safetensors_bytes(
                   R"({"x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})", "abcd")),
               Contains("tensor 'x' has dtype I32, which netmorph does not read"));
  }
  SECTION("duplicate names") {
    CHECK_THAT(
        read_error(safetensors_bytes(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                     R"("x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                     le_bytes<float>({1, 2}))),
        Contains("the header has the key 'x' twice"));
  }
  SECTION("metadata that is not string to string") {
    CHECK_THAT(read_error(safetensors_bytes(R"({"__metadata__":{"k":1}})", "")),
               Contains("__metadata__ value of 'k' must be a string, got number"));
    CHECK_THAT(read_error(safetensors_bytes(R"({"__metadata__":["k"]})", "")),
               Contains("__metadata__ must be an object, got array"));
  }
  SECTION("a header that is not a JSON object of tensors") {
    CHECK_THAT(read_error(safetensors_bytes(R"({"x":)", "")), Contains("is not valid JSON"));
    CHECK_THAT(read_error(safetensors_bytes("[1,2]", "")),
               Contains("the header must be a JSON object, got array"));
    CHECK_THAT(read_error(safetensors_bytes(R"({"x":3})", "")),
               Contains("tensor 'x' must be an object, got number"));
    CHECK_THAT(read_error(safetensors_bytes(R"({"x":{"dtype":"F32","shape":[0]}})", "")),
               Contains("tensor 'x' has no 'data_offsets'"));
    CHECK_THAT(read_error(safetensors_bytes(
                   R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"extra":1}})", "")),
               Contains("tensor 'x' has the unknown field 'extra'"));
    CHECK_THAT(read_error(safetensors_bytes(
                   R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[0]}})", "")),
               Contains("data_offsets must be two non-negative integers, got [0]"));
    CHECK_THAT(read_error(safetensors_bytes(std::string(100, '[') + std::string(100, ']'), "")),
               Contains("nested deeper than 3 levels"));
  }
}

TEST_CASE("every truncation and every header byte corruption is an io_error or a success",
          "[io][safetensors][error][property]") {
  const std::string ok = safetensors_bytes(valid_header, valid_data);
  const std::size_t header_end = 8 + valid_header.size();
  auto parse = [](const std::string& b) {
    io::safetensors_reader r(b.data(), b.size(), "corrupt");
    for (const io::tensor_info& t : r.tensors())
      (void)r.read<double>(t);
  };
  std::size_t refused = 0, accepted = 0;
  auto attempt = [&](const std::string& b) {
    try {
      parse(b);
      ++accepted;
    } catch (const netmorph::io_error& e) {
      CHECK_THAT(std::string(e.what()), Contains("netmorph::io::read_safetensors: 'corrupt': "));
      ++refused;
    } catch (const std::exception& e) {
      FAIL("not an io_error: " << e.what());
    }
  };
  for (std::size_t n = 0; n < ok.size(); ++n) {
    CAPTURE(n);
    attempt(ok.substr(0, n));
  }
  CHECK(accepted == 0);  // no proper prefix of a valid file is valid
  {                      // and through a file as well
    temp_path f("truncated");
    for (std::size_t n = 0; n < ok.size(); ++n) {
      write_bytes(f.path, ok.substr(0, n));
      CHECK_THROWS_AS(io::read_safetensors<float>(f.path), netmorph::io_error);
    }
  }
  const unsigned char values[] = {0x00, 0xff, '0', '9', '"', '{',  '}',  '[', ']',
                                  ',',  ':',  ' ', '-', 'e', '\\', 0x80, 0xc3};
  for (std::size_t pos = 0; pos < header_end; ++pos)
    for (unsigned char v : values) {
      std::string b = ok;
      b[pos] = static_cast<char>(v);
      CAPTURE(pos, int(v));
      attempt(b);
      b[pos] = static_cast<char>(ok[pos] ^ 0x01);
      attempt(b);
    }
  CHECK(refused > 0);
}

TEST_CASE("write_safetensors refuses what it cannot write", "[io][safetensors][error]") {
  temp_path f("badwrite");
  io::safetensors_content<double> c;
  c.tensors.push_back({"w", tensor<double>({2}, 1.0)});
  CHECK_THAT(io_error_message([&] { io::write_safetensors(f.path, c, io::dtype::float16); }),
             Contains("netmorph::io::write_safetensors") && Contains(f.path) &&
                 Contains("netmorph writes F32 or F64, not F16"));
  c.tensors.push_back({"w", tensor<double>({1})});
  CHECK_THAT(io_error_message([&] { io::write_safetensors(f.path, c); }),
             Contains("the tensor name 'w' is taken"));
  c.tensors.back().name = "__metadata__";
  CHECK_THAT(io_error_message([&] { io::write_safetensors(f.path, c); }),
             Contains("the tensor name '__metadata__' is reserved"));
  c.tensors.back() = {"big", tensor<double>({1}, 1e300)};
  CHECK_THAT(io_error_message([&] { io::write_safetensors(f.path, c, io::dtype::float32); }),
             Contains("tensor 'big' holds 1e+300 at flat index 0, which does not fit F32"));
  c.tensors.pop_back();
  CHECK_THAT(io_error_message([&] { io::write_safetensors("no/such/dir/x.safetensors", c); }),
             Contains("cannot create the temporary file"));
  std::ifstream none(f.path);
  CHECK_FALSE(none.good());  // no failed write left a file behind
}

// netmorph::io IDX reader and writer: round trips (plain and gzip), images and labels in the
// layout nn::model trains on, every malformed file refused with an io_error that names the
// function, the file and the values, and the real Fashion-MNIST and MNIST files when present.

#include "support/io_support.hpp"

#include <netmorph/io/idx.hpp>

#include <zlib.h>
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace nmtest;
namespace io = netmorph::io;
using Catch::Matchers::Contains;
using bytes_t = std::vector<std::uint8_t>;

namespace {

/// A file in the test's working directory, removed at the end of its scope.
struct temp_file {
  std::string path;
  explicit temp_file(const std::string& name) : path("netmorph_idx_" + name) {
    std::remove(path.c_str());
  }
  ~temp_file() { std::remove(path.c_str()); }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
};

std::string as_string(const bytes_t& b) {
  return std::string(b.begin(), b.end());
}

/// IDX bytes: magic 0 0 `type` `ndim`, the big-endian `dims`, then `data`.
bytes_t idx_bytes(std::uint8_t type, std::uint8_t ndim, const std::vector<std::uint32_t>& dims,
                  const bytes_t& data) {
  bytes_t b = {0, 0, type, ndim};
  for (std::uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8)
      b.push_back(static_cast<std::uint8_t>((d >> s) & 0xffu));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

/// Values 0, 1, 2, ... (mod 256).
bytes_t ramp(std::size_t n) {
  bytes_t v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<std::uint8_t>(i % 256);
  return v;
}

/// Writes `members` to `path` as one gzip member each (zlib's gzopen/gzwrite), concatenated.
void write_gzip(const std::string& path, const std::vector<bytes_t>& members) {
  std::remove(path.c_str());
  for (std::size_t m = 0; m < members.size(); ++m) {
    gzFile f = gzopen(path.c_str(), m == 0 ? "wb" : "ab");
    REQUIRE(f != nullptr);
    const bytes_t& b = members[m];
    if (!b.empty()) REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == int(b.size()));
    REQUIRE(gzclose(f) == Z_OK);
  }
}

/// The gzip bytes of `members` (written and read back through a file).
bytes_t gzip_bytes(const std::vector<bytes_t>& members) {
  temp_file f("gzip_bytes.gz");
  write_gzip(f.path, members);
  const std::string s = read_bytes(f.path);
  return bytes_t(s.begin(), s.end());
}

/// The message of the io_error that reading `bytes` from a plain file, from a gzip file and from
/// memory (plain) throws; each must name its reader and source. Returns the plain-file message.
std::string read_error(const bytes_t& bytes, std::uint64_t max_bytes = io::max_idx_bytes) {
  temp_file f("bad.idx");
  write_bytes(f.path, as_string(bytes));
  const std::string msg = io_error_message([&] { io::read_idx(f.path, max_bytes); });
  CHECK_THAT(msg, Contains("netmorph::io::read_idx: '" + f.path + "': "));
  const std::string mem = io_error_message(
      [&] { io::read_idx_bytes(bytes.data(), bytes.size(), "buffer", max_bytes); });
  CHECK_THAT(mem, Contains("netmorph::io::read_idx_bytes: 'buffer': "));
  temp_file g("bad.idx.gz");
  write_gzip(g.path, {bytes});
  const std::string gz = io_error_message([&] { io::read_idx(g.path, max_bytes); });
  CHECK_THAT(gz, Contains("netmorph::io::read_idx: '" + g.path + "': "));
  // The same fault is reported the same way, only the subject differs ("the file", "the
  // decompressed data").
  const std::string fault = msg.substr(msg.find("': ") + 3);
  const std::string head = fault.substr(0, std::min<std::size_t>(fault.find_first_of(":,"), 24));
  CHECK_THAT(gz, Contains(head));
  CHECK_THAT(mem, Contains(head));
  return msg;
}

/// The message of the io_error that reading the gzip bytes `gz` from a file throws.
std::string read_gzip_error(const bytes_t& gz, std::uint64_t max_bytes = io::max_idx_bytes) {
  temp_file f("bad.gz");
  write_bytes(f.path, as_string(gz));
  const std::string msg = io_error_message([&] { io::read_idx(f.path, max_bytes); });
  CHECK_THAT(msg, Contains("netmorph::io::read_idx: '" + f.path + "': "));
  const std::string mem =
      io_error_message([&] { io::read_idx_bytes(gz.data(), gz.size(), "buffer", max_bytes); });
  CHECK(mem.substr(mem.find("': ")) == msg.substr(msg.find("': ")));
  return msg;
}

/// Where the data files of scripts/setup_data.sh live: $NETMORPH_DATA_DIR, else data/ in the
/// source tree of this file.
std::string data_dir() {
  if (const char* env = std::getenv("NETMORPH_DATA_DIR")) return env;
  std::string here = __FILE__;
  const std::size_t slash = here.find_last_of('/');
  here = slash == std::string::npos ? std::string(".") : here.substr(0, slash);
  return here + "/../data";
}

bool exists(const std::string& path) {
  return std::ifstream(path, std::ios::binary).good();
}

/// Independent decoding of a gzip IDX file: zlib's gzread and a hand-written header parse.
io::idx_data gzread_idx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  bytes_t all;
  std::array<std::uint8_t, 1 << 16> buf{};
  int n;
  while ((n = gzread(f, buf.data(), unsigned(buf.size()))) > 0)
    all.insert(all.end(), buf.begin(), buf.begin() + n);
  REQUIRE(n == 0);
  gzclose(f);
  REQUIRE(all.size() >= 4);
  io::idx_data d;
  const std::size_t ndim = all[3];
  for (std::size_t i = 0; i < ndim; ++i) {
    const std::uint8_t* p = all.data() + 4 + 4 * i;
    d.shape.push_back(idx((std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) |
                          (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3])));
  }
  d.values.assign(all.begin() + static_cast<std::ptrdiff_t>(4 + 4 * ndim), all.end());
  return d;
}

}  // namespace

TEST_CASE("write_idx writes the big-endian header and the values", "[io][idx]") {
  temp_file f("header.idx");
  io::write_idx(f.path, {2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(read_bytes(f.path) == as_string(idx_bytes(0x08, 2, {2, 3}, {1, 2, 3, 4, 5, 6})));
  io::write_idx(f.path, {70000}, ramp(70000));  // an extent above 16 bits
  CHECK(read_bytes(f.path) == as_string(idx_bytes(0x08, 1, {70000}, ramp(70000))));
}

TEST_CASE(
    "write_idx then read_idx and read_idx_bytes give the shape and values back, plain and "
    "gzip",
    "[io][idx][property]") {
  std::mt19937_64 rng = make_rng(11);
  for (int trial = 0; trial < 20; ++trial) {
    netmorph::shape_type shape(static_cast<std::size_t>(draw(rng, 1, 4)));
    for (idx& e : shape)
      e = draw(rng, 1, 7);
    bytes_t values(static_cast<std::size_t>(netmorph::detail::element_count(shape)));
    for (std::uint8_t& v : values)
      v = static_cast<std::uint8_t>(draw(rng, 0, 255));
    CAPTURE(trial, netmorph::detail::shape_string(shape));
    temp_file f("roundtrip.idx");
    io::write_idx(f.path, shape, values);
    const io::idx_data plain = io::read_idx(f.path);
    CHECK(plain.shape == shape);
    CHECK(plain.values == values);
    const std::string file = read_bytes(f.path);
    const io::idx_data mem = io::read_idx_bytes(reinterpret_cast<const std::uint8_t*>(file.data()),
                                                file.size(), "memory");
    CHECK(mem.shape == shape);
    CHECK(mem.values == values);
    // gzip: one member, and the header and data as two concatenated members.
    const bytes_t b(file.begin(), file.end());
    const std::size_t h = 4 + 4 * shape.size();
    temp_file g("roundtrip.idx.gz");
    write_gzip(g.path, {b});
    const io::idx_data gz = io::read_idx(g.path);
    CHECK(gz.shape == shape);
    CHECK(gz.values == values);
    const bytes_t two =
        gzip_bytes({bytes_t(b.begin(), b.begin() + idx(h)), bytes_t(b.begin() + idx(h), b.end())});
    const io::idx_data gz2 = io::read_idx_bytes(two.data(), two.size(), "two members");
    CHECK(gz2.shape == shape);
    CHECK(gz2.values == values);
  }
}

TEST_CASE("read_idx inflates a gzip file larger than its chunks", "[io][idx]") {
  // 3 MiB of data: many input and output chunks, and an output buffer that grows.
  const bytes_t values = ramp(3 * 1024 * 1024);
  temp_file g("large.idx.gz");
  write_gzip(g.path, {idx_bytes(0x08, 3, {3072, 32, 32}, values)});
  const io::idx_data d = io::read_idx(g.path);
  CHECK(d.shape == netmorph::shape_type{3072, 32, 32});
  CHECK((d.values == values));  // not decomposed: Catch would print 3 MiB
}

TEMPLATE_TEST_CASE(
    "read_idx_images gives (N, 1, H, W) with values k * scale, read_idx_labels "
    "the labels",
    "[io][idx]", float, double) {
  const bytes_t values = ramp(2 * 3 * 4);
  temp_file f("images.idx");
  io::write_idx(f.path, {2, 3, 4}, values);
  const tensor<TestType> x = io::read_idx_images<TestType>(f.path);
  REQUIRE(x.shape() == netmorph::shape_type{2, 1, 3, 4});
  for (std::size_t i = 0; i < values.size(); ++i)
    CHECK(x.data()[i] == TestType(values[i]) * (TestType(1) / TestType(255)));
  CHECK(x(1, 0, 2, 3) == TestType(23) / TestType(255) * TestType(1));
  const tensor<TestType> raw = io::read_idx_images<TestType>(f.path, TestType(1));
  CHECK(raw(1, 0, 2, 3) == TestType(23));
  // Labels are returned as they are: no number of classes is assumed.
  temp_file l("labels.idx.gz");
  write_gzip(l.path, {idx_bytes(0x08, 1, {4}, {0, 9, 10, 255})});
  CHECK(io::read_idx_labels(l.path) == std::vector<int>{0, 9, 10, 255});
}

TEMPLATE_TEST_CASE("read_idx_dataset pairs images and labels for nn::train_epoch", "[io][idx]",
                   float, double) {
  temp_file f("ds_images.idx"), l("ds_labels.idx"), bad("ds_labels3.idx");
  io::write_idx(f.path, {2, 2, 2}, ramp(8));
  io::write_idx(l.path, {2}, {3, 7});
  const netmorph::nn::dataset<TestType> d = io::read_idx_dataset<TestType>(f.path, l.path);
  CHECK(d.size() == 2);
  CHECK(d.x.shape() == netmorph::shape_type{2, 1, 2, 2});
  CHECK(d.labels == std::vector<int>{3, 7});
  io::write_idx(bad.path, {3}, {1, 2, 3});
  const std::string msg =
      io_error_message([&] { io::read_idx_dataset<TestType>(f.path, bad.path); });
  CHECK_THAT(msg, Contains("netmorph::io::read_idx_dataset") && Contains(f.path) &&
                      Contains("holds 2 images") && Contains(bad.path) &&
                      Contains("holds 3 labels"));
}

TEST_CASE("read_idx_images and read_idx_labels refuse files of the wrong rank", "[io][idx]") {
  temp_file f("rank.idx");
  io::write_idx(f.path, {4}, {1, 2, 3, 4});
  CHECK_THAT(io_error_message([&] { io::read_idx_images<float>(f.path); }),
             Contains("netmorph::io::read_idx_images: '" + f.path + "': ") &&
                 Contains("images must have shape (N, H, W), got (4)"));
  io::write_idx(f.path, {1, 2, 2}, {1, 2, 3, 4});
  CHECK_THAT(io_error_message([&] { io::read_idx_labels(f.path); }),
             Contains("netmorph::io::read_idx_labels: '" + f.path + "': ") &&
                 Contains("labels must have shape (N), got (1, 2, 2)"));
  REQUIRE_THROWS_AS(io::read_idx_images<double>(f.path, std::nan("")), netmorph::value_error);
  // The readers name themselves also for faults of the file.
  write_bytes(f.path, "\x00\x00\x08");
  CHECK_THAT(io_error_message([&] { io::read_idx_labels(f.path); }),
             Contains("netmorph::io::read_idx_labels: '" + f.path + "': truncated"));
}

TEST_CASE("read_idx refuses a wrong magic", "[io][idx][error]") {
  const std::string msg = read_error({0x01, 0x02, 0x08, 0x01, 0, 0, 0, 1, 7});
  CHECK_THAT(msg, Contains("wrong magic 0x01 0x02 0x08 0x01"));
  REQUIRE_THROWS_AS(io::read_idx_bytes(nullptr, 0), netmorph::io_error);
}

TEST_CASE("read_idx refuses element types other than unsigned byte", "[io][idx][error]") {
  CHECK_THAT(read_error(idx_bytes(0x0D, 1, {1}, {0, 0, 0, 0})),
             Contains("element type 0x0d (float32) is not read by netmorph (only 0x08"));
  CHECK_THAT(read_error(idx_bytes(0x09, 1, {1}, {0})), Contains("0x09 (signed byte)"));
  CHECK_THAT(read_error(idx_bytes(0x07, 1, {1}, {0})), Contains("unknown element type 0x07"));
}

TEST_CASE("read_idx refuses ndim 0 and ndim above 4", "[io][idx][error]") {
  CHECK_THAT(read_error(idx_bytes(0x08, 0, {}, {1})),
             Contains("ndim 0 is not supported (1 to 4 dimensions)"));
  CHECK_THAT(read_error(idx_bytes(0x08, 5, {1, 1, 1, 1, 1}, {1})),
             Contains("ndim 5 is not supported"));
  CHECK_THAT(read_error(idx_bytes(0x08, 255, {}, {})), Contains("ndim 255 is not supported"));
}

TEST_CASE("read_idx refuses a dimension of 0", "[io][idx][error]") {
  CHECK_THAT(read_error(idx_bytes(0x08, 3, {2, 0, 3}, {})),
             Contains("dimension 1 of shape (2, 0, 3) is 0"));
}

TEST_CASE("read_idx refuses shapes whose product overflows or exceeds the limit",
          "[io][idx][error]") {
  // 2^128 - ...: the product overflows 64 bits; the check divides instead of multiplying.
  CHECK_THAT(read_error(idx_bytes(0x08, 4, {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                                  {1, 2, 3})),
             Contains("shape (4294967295, 4294967295, 4294967295, 4294967295) has 3.40282e+38 "
                      "values, more than the reader's limit of 1073741824"));
  // A tiny file that declares 4 GiB is refused before anything is allocated.
  CHECK_THAT(read_error(idx_bytes(0x08, 2, {65536, 65536}, {})),
             Contains("shape (65536, 65536) has 4.29497e+09 values"));
  // A caller's own limit.
  CHECK_THAT(read_error(idx_bytes(0x08, 2, {10, 11}, ramp(110)), 100),
             Contains("shape (10, 11) has 110 values, more than the reader's limit of 100"));
  CHECK(io::read_idx_bytes(idx_bytes(0x08, 2, {10, 10}, ramp(100)).data(), 112, "x", 100)
            .values.size() == 100);
}

TEST_CASE("read_idx refuses truncated files", "[io][idx][error]") {
  CHECK_THAT(read_error({}), Contains("truncated: 0 bytes, shorter than the 4-byte magic"));
  CHECK_THAT(read_error({0, 0, 8}), Contains("truncated: 3 bytes, shorter than the 4-byte magic"));
  CHECK_THAT(read_error({0, 0, 8, 3, 0, 0, 0, 2, 0, 0}),
             Contains("truncated: 10 bytes, shorter than the 16-byte header of 3 dimensions"));
  const std::string msg = read_error(idx_bytes(0x08, 3, {10, 28, 28}, ramp(1000)));
  CHECK_THAT(msg, Contains("truncated: shape (10, 28, 28) needs 7840 data bytes after the "
                           "16-byte header, the file has 1000"));
}

TEST_CASE("read_idx refuses trailing bytes after the data", "[io][idx][error]") {
  const std::string msg = read_error(idx_bytes(0x08, 2, {2, 3}, ramp(8)));
  CHECK_THAT(msg, Contains("trailing bytes: 2 bytes after the 6 data bytes of shape (2, 3) (the "
                           "file has 20 bytes)"));
  // Through gzip, the reader stops at the first byte past the declared size.
  const bytes_t gz = gzip_bytes({idx_bytes(0x08, 2, {2, 3}, ramp(8))});
  CHECK_THAT(read_gzip_error(gz),
             Contains("trailing bytes: the decompressed data runs past the 12-byte header and 6 "
                      "data bytes of shape (2, 3)"));
}

TEST_CASE("read_idx refuses corrupt and truncated gzip streams", "[io][idx][error]") {
  const bytes_t good = gzip_bytes({idx_bytes(0x08, 2, {16, 16}, ramp(256))});
  REQUIRE(io::read_idx_bytes(good.data(), good.size()).values == ramp(256));
  SECTION("a damaged deflate block") {
    bytes_t bad = good;
    for (std::size_t i = 10; i < 16; ++i)
      bad[i] = 0xff;
    CHECK_THAT(read_gzip_error(bad), Contains("corrupt gzip stream at compressed byte "));
  }
  SECTION("a wrong CRC") {
    bytes_t bad = good;
    bad[bad.size() - 8] ^= 0x01;  // the CRC-32 of the trailer
    CHECK_THAT(read_gzip_error(bad),
               Contains("corrupt gzip stream") && Contains("incorrect data check"));
  }
  SECTION("a wrong gzip header") {
    bytes_t bad = good;
    bad[2] = 0x07;  // compression method other than deflate
    CHECK_THAT(read_gzip_error(bad), Contains("corrupt gzip stream at compressed byte"));
  }
  SECTION("cut anywhere") {
    for (std::size_t n : {std::size_t(2), std::size_t(9), good.size() / 2, good.size() - 1}) {
      CAPTURE(n);
      const bytes_t cut(good.begin(), good.begin() + idx(n));
      CHECK_THAT(read_gzip_error(cut), Contains("truncated gzip stream: the " + std::to_string(n) +
                                                " compressed bytes end before the stream does"));
    }
  }
  SECTION("garbage after the stream") {
    bytes_t bad = good;
    bad.push_back(0x00);
    bad.push_back(0x42);
    CHECK_THAT(read_gzip_error(bad),
               Contains("2 bytes after the end of the gzip stream (at compressed byte " +
                        std::to_string(good.size()) + ") are not another gzip member"));
  }
  SECTION("a stream that ends inside the header") {
    CHECK_THAT(read_gzip_error(gzip_bytes({{0, 0, 8, 2, 0, 0}})),
               Contains("truncated: 6 bytes, shorter than the 12-byte header of 2 dimensions"));
    CHECK_THAT(read_gzip_error(gzip_bytes({{}})),
               Contains("truncated: 0 bytes, shorter than the 4-byte magic"));
  }
}

TEST_CASE("read_idx refuses gzip bombs after their first bytes", "[io][idx][error]") {
  // 16 MiB of zeros (16 KiB compressed): the magic 0 0 0 0 is refused at once.
  const bytes_t zeros(16u << 20, 0);
  CHECK_THAT(read_gzip_error(gzip_bytes({zeros})), Contains("unknown element type 0x00"));
  // A valid header that declares 10 bytes, followed by 16 MiB.
  bytes_t declared = idx_bytes(0x08, 1, {10}, {});
  CHECK_THAT(read_gzip_error(gzip_bytes({declared, zeros})),
             Contains("trailing bytes: the decompressed data runs past the 8-byte header and 10 "
                      "data bytes of shape (10)"));
  // One that declares more than the caller's limit.
  declared = idx_bytes(0x08, 2, {4096, 4096}, {});
  CHECK_THAT(read_gzip_error(gzip_bytes({declared, zeros}), 1u << 20),
             Contains("shape (4096, 4096) has 1.67772e+07 values, more than the reader's limit of "
                      "1048576"));
}

TEST_CASE("read_idx refuses a missing file", "[io][idx][error]") {
  const std::string path = "netmorph_idx_does_not_exist.idx";
  std::remove(path.c_str());
  CHECK_THAT(io_error_message([&] { io::read_idx(path); }),
             Contains("netmorph::io::read_idx: '" + path + "': cannot open the file (") &&
                 Contains("No such file"));
  CHECK_THAT(io_error_message([&] { io::read_idx_images<float>(path); }),
             Contains("netmorph::io::read_idx_images: '" + path + "': cannot open the file"));
#if defined(__unix__) || defined(__APPLE__)
  // A directory is refused before it is read (test_io_files has every file kind).
  CHECK_THAT(io_error_message([&] { io::read_idx("."); }),
             Contains("netmorph::io::read_idx: '.': is a directory, not a regular file"));
#endif
}

TEST_CASE("write_idx refuses shapes IDX cannot hold and value counts that do not fit",
          "[io][idx][error]") {
  temp_file f("bad_write.idx");
  const auto msg = [&](const netmorph::shape_type& s, const bytes_t& v) {
    const std::string m = io_error_message([&] { io::write_idx(f.path, s, v); });
    CHECK_THAT(m, Contains("netmorph::io::write_idx: '" + f.path + "': "));
    return m;
  };
  CHECK_THAT(msg({}, {}), Contains("shape () has 0 dimensions (IDX: 1 to 4)"));
  CHECK_THAT(msg({1, 1, 1, 1, 1}, {1}), Contains("has 5 dimensions"));
  CHECK_THAT(msg({2, 0}, {}), Contains("shape (2, 0) has the extent 0 (IDX: 1 to 4294967295)"));
  CHECK_THAT(msg({idx(1) << 32}, {}), Contains("has the extent 4294967296"));
  CHECK_THAT(msg({2, 3}, ramp(5)), Contains("shape (2, 3) holds 6 values, got 5"));
  CHECK_THAT(msg({0xffffffffll, 0xffffffffll, 0xffffffffll}, ramp(5)),
             Contains("holds 7.92282e+28 values, got 5"));
  CHECK_FALSE(exists(f.path));
  // A failed write leaves an existing file as it was.
  io::write_idx(f.path, {2}, {1, 2});
  msg({3}, {1, 2});
  CHECK(io::read_idx(f.path).values == bytes_t{1, 2});
}

TEST_CASE("Fashion-MNIST (Debian dataset-fashion-mnist) reads as 10000 and 60000 images",
          "[io][idx][data]") {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  const std::string images = dir + "t10k-images-idx3-ubyte.gz",
                    labels = dir + "t10k-labels-idx1-ubyte.gz";
  if (!exists(images) || !exists(labels)) {
    WARN("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); skipped");
    return;
  }
  const netmorph::nn::dataset<float> test = io::read_idx_dataset<float>(images, labels);
  REQUIRE(test.x.shape() == netmorph::shape_type{10000, 1, 28, 28});
  REQUIRE(test.labels.size() == 10000);
  std::map<int, int> per_class;
  for (int y : test.labels)
    ++per_class[y];
  REQUIRE(per_class.size() == 10);
  for (const auto& c : per_class) {
    CAPTURE(c.first);
    CHECK(c.first >= 0);
    CHECK(c.first <= 9);
    CHECK(c.second == 1000);
  }
  // The first test labels of Fashion-MNIST: ankle boot, pullover, trouser, trouser, shirt, ...
  CHECK(std::vector<int>(test.labels.begin(), test.labels.begin() + 10) ==
        std::vector<int>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7});
  // Bytes as zlib's own gzread decodes them.
  const io::idx_data ref = gzread_idx(images);
  const io::idx_data got = io::read_idx(images);
  CHECK(got.shape == ref.shape);
  CHECK((got.values == ref.values));  // not decomposed: Catch would print 7.8 MB
  CHECK(test.x.data()[100] == float(ref.values[100]) * (1.0f / 255.0f));

  const std::string train_images = dir + "train-images-idx3-ubyte.gz",
                    train_labels = dir + "train-labels-idx1-ubyte.gz";
  if (exists(train_images) && exists(train_labels)) {
    const std::vector<int> y = io::read_idx_labels(train_labels);
    REQUIRE(y.size() == 60000);
    std::map<int, int> n;
    for (int v : y)
      ++n[v];
    REQUIRE(n.size() == 10);
    for (const auto& c : n)
      CHECK(c.second == 6000);
    CHECK(io::read_idx(train_images).shape == netmorph::shape_type{60000, 28, 28});
  }
}

TEST_CASE("MNIST digits of scripts/setup_data.sh read as the documented 8000/2000 split",
          "[io][idx][data]") {
  const std::string dir = data_dir() + "/mnist/";
  const std::string names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                               "test-images-idx3-ubyte", "test-labels-idx1-ubyte"};
  for (const std::string& n : names)
    if (!exists(dir + n)) {
      WARN("MNIST digits not set up (" << dir + n
                                       << " is absent; run scripts/setup_data.sh); "
                                          "skipped");
      return;
    }
  const netmorph::nn::dataset<double> train =
      io::read_idx_dataset<double>(dir + names[0], dir + names[1]);
  const netmorph::nn::dataset<double> test =
      io::read_idx_dataset<double>(dir + names[2], dir + names[3]);
  REQUIRE(train.x.shape() == netmorph::shape_type{8000, 1, 28, 28});
  REQUIRE(test.x.shape() == netmorph::shape_type{2000, 1, 28, 28});
  // The stratified split of docs/DATA.md: 80 % / 20 % of each digit (largest remainder).
  const std::map<int, int> source = {{0, 1001}, {1, 1127}, {2, 991},  {3, 1032}, {4, 980},
                                     {5, 863},  {6, 1014}, {7, 1070}, {8, 944},  {9, 978}};
  const std::map<int, int> test_count = {{0, 200}, {1, 225}, {2, 198}, {3, 206}, {4, 196},
                                         {5, 173}, {6, 203}, {7, 214}, {8, 189}, {9, 196}};
  std::map<int, int> n_train, n_test;
  for (int y : train.labels)
    ++n_train[y];
  for (int y : test.labels)
    ++n_test[y];
  CHECK(n_test == test_count);
  for (const auto& c : source) {
    CAPTURE(c.first);
    CHECK(n_train[c.first] + n_test[c.first] == c.second);
  }
  // Pixels are k / 255 with k in 0..255; the images are not blank; train and test are disjoint.
  CHECK(train.x.vector().minCoeff() == 0.0);
  CHECK(train.x.vector().maxCoeff() == 1.0);
  const io::idx_data a = io::read_idx(dir + names[0]), b = io::read_idx(dir + names[2]);
  std::set<std::string> seen;
  for (std::size_t i = 0; i < 8000; ++i)
    seen.insert(
        std::string(a.values.begin() + idx(784 * i), a.values.begin() + idx(784 * i + 784)));
  std::size_t shared = 0;
  for (std::size_t i = 0; i < 2000; ++i)
    shared += seen.count(
        std::string(b.values.begin() + idx(784 * i), b.values.begin() + idx(784 * i + 784)));
  CHECK(shared == 0);
}

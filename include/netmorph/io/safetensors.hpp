#ifndef NETMORPH_IO_SAFETENSORS_HPP
#define NETMORPH_IO_SAFETENSORS_HPP

/// \file safetensors.hpp
/// Reading and writing `.safetensors` files: an 8-byte little-endian header length `n`, `n` bytes
/// of JSON (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
/// "__metadata__": {"key": "value"}}`), then the raw little-endian C-order data. The reader
/// enforces the format's rules (header at most 100 MB, offsets contiguous from 0 and matching
/// `prod(shape) * dtype size`, the data ending where the file ends, no duplicate names,
/// `__metadata__` string to string) and never allocates from a field it has not checked against
/// the file's size. Data is read straight into the destination tensors' storage (converted in
/// bounded chunks when the file's dtype is not the tensor's scalar) and written as a stream.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/tensor.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace netmorph {
namespace io {

/// Element types of a file: read F16, BF16, F32, F64; write F32 or F64.
enum class dtype { float16, bfloat16, float32, float64 };

/// The format's name of an element type: "F16", "BF16", "F32", "F64".
inline const char* to_string(dtype t) {
  switch (t) {
    case dtype::float16:
      return "F16";
    case dtype::bfloat16:
      return "BF16";
    case dtype::float32:
      return "F32";
    default:
      return "F64";
  }
}

/// Bytes per element.
inline std::size_t dtype_size(dtype t) {
  return t == dtype::float16 || t == dtype::bfloat16 ? 2 : t == dtype::float32 ? 4 : 8;
}

/// The file dtype that stores `Scalar` without conversion.
template <typename Scalar>
constexpr dtype native_dtype() {
  static_assert(std::is_same<Scalar, float>::value || std::is_same<Scalar, double>::value,
                "netmorph::io stores float or double tensors.");
  return std::is_same<Scalar, float>::value ? dtype::float32 : dtype::float64;
}

/// The `__metadata__` of a file: string keys to string values.
using metadata_map = std::map<std::string, std::string>;

/// The largest header the reader accepts (the format's limit).
inline constexpr std::uint64_t max_header_bytes = 100000000;

/// One tensor of a file's header. `begin`/`end` are byte offsets into the data section (after the
/// header). A rank-0 tensor of the file (one element) has `shape` `{1}`.
struct tensor_info {
  std::string name;
  io::dtype type = dtype::float32;
  shape_type shape;
  std::uint64_t begin = 0, end = 0;
  index_type size() const {
    index_type n = 1;
    for (index_type e : shape)
      n *= e;
    return n;
  }
};

/// A tensor with its name.
template <typename Scalar>
struct named_tensor {
  std::string name;
  tensor<Scalar> value;
};

/// What a file holds: its tensors in file order and its metadata.
template <typename Scalar>
struct safetensors_content {
  std::vector<named_tensor<Scalar>> tensors;
  metadata_map metadata;
};

/// A named tensor to write, by reference (writing a model copies none of its tensors).
template <typename Scalar>
struct tensor_ref {
  std::string name;
  const tensor<Scalar>* value = nullptr;
};

namespace detail {

using netmorph::detail::cat;

inline bool little_endian_host() {
  const std::uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

/// The "who: 'source': " prefix of every message.
inline std::string where(const std::string& who, const std::string& source) {
  return cat(who, ": '", source, "': ");
}

/// IEEE half to float, exactly (subnormals, infinities and NaN included).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    bits = sign | (std::uint32_t(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// bfloat16 (the upper half of a float) to float, exactly.
inline float bfloat16_to_float(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline std::uint64_t load_le(const unsigned char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = n; i-- > 0;)
    v = (v << 8) | p[i];
  return v;
}

inline void store_le(unsigned char* p, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i, v >>= 8)
    p[i] = static_cast<unsigned char>(v & 0xffu);
}

/// One little-endian element of `type` at `p`, as `Scalar`.
template <typename Scalar>
Scalar decode(const unsigned char* p, dtype type) {
  switch (type) {
    case dtype::float16:
      return static_cast<Scalar>(half_to_float(static_cast<std::uint16_t>(load_le(p, 2))));
    case dtype::bfloat16:
      return static_cast<Scalar>(bfloat16_to_float(static_cast<std::uint16_t>(load_le(p, 2))));
    case dtype::float32: {
      const std::uint32_t bits = static_cast<std::uint32_t>(load_le(p, 4));
      float f;
      std::memcpy(&f, &bits, 4);
      return static_cast<Scalar>(f);
    }
    default: {
      const std::uint64_t bits = load_le(p, 8);
      double d;
      std::memcpy(&d, &bits, 8);
      return static_cast<Scalar>(d);
    }
  }
}

struct file_closer {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using file_ptr = std::unique_ptr<std::FILE, file_closer>;

inline bool seek(std::FILE* f, std::uint64_t offset) {
#if defined(_WIN32)
  return _fseeki64(f, static_cast<long long>(offset), SEEK_SET) == 0;
#elif defined(__unix__) || defined(__APPLE__)
  return fseeko(f, static_cast<off_t>(offset), SEEK_SET) == 0;
#else
  return offset <= std::uint64_t(std::numeric_limits<long>::max()) &&
         std::fseek(f, static_cast<long>(offset), SEEK_SET) == 0;
#endif
}

inline bool file_size(std::FILE* f, std::uint64_t& size) {
#if defined(_WIN32)
  if (_fseeki64(f, 0, SEEK_END) != 0) return false;
  const long long n = _ftelli64(f);
#elif defined(__unix__) || defined(__APPLE__)
  if (fseeko(f, 0, SEEK_END) != 0) return false;
  const off_t n = ftello(f);
#else
  if (std::fseek(f, 0, SEEK_END) != 0) return false;
  const long n = std::ftell(f);
#endif
  if (n < 0) return false;
  size = static_cast<std::uint64_t>(n);
  return true;
}

/// Bytes of a file or of a caller's buffer, read at offsets.
class byte_source {
 public:
  byte_source(const std::string& path, const std::string& who) : source_(path) {
    file_.reset(std::fopen(path.c_str(), "rb"));
    if (!file_)
      throw io_error(cat(where(who, path), "cannot open the file (", std::strerror(errno), ")"));
    if (!file_size(file_.get(), size_))
      throw io_error(cat(where(who, path), "cannot determine the file's size"));
  }
  byte_source(const void* data, std::size_t size, std::string source)
      : source_(std::move(source)), data_(static_cast<const unsigned char*>(data)), size_(size) {}

  std::uint64_t size() const { return size_; }
  const std::string& name() const { return source_; }
  /// Reads `n` bytes at `offset` (the caller checked that they lie inside the source).
  bool read(std::uint64_t offset, void* dst, std::uint64_t n) {
    if (offset > size_ || n > size_ - offset) return false;
    if (n == 0) return true;
    if (data_) {
      std::memcpy(dst, data_ + offset, static_cast<std::size_t>(n));
      return true;
    }
    if (!seek(file_.get(), offset)) return false;
    return std::fread(dst, 1, static_cast<std::size_t>(n), file_.get()) == n;
  }

 private:
  std::string source_;
  file_ptr file_;
  const unsigned char* data_ = nullptr;
  std::uint64_t size_ = 0;
};

/// One pass over JSON text that refuses duplicate keys at any level (nlohmann keeps the last one
/// silently) and nesting deeper than `max_depth`, in time linear in the text (a set of keys per
/// open object; nlohmann's callback parser rescans objects and is quadratic).
class json_key_check : public nlohmann::json_sax<nlohmann::json> {
 public:
  json_key_check(int max_depth, std::string prefix, const char* what)
      : max_depth_(max_depth), prefix_(std::move(prefix)), what_(what) {}
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    open();
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second)
      throw io_error(cat(prefix_, what_, " has the key '", k, "' twice"));
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    open();
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw io_error(cat(prefix_, what_, " is not valid JSON: ", e.what()));
  }

 private:
  void open() {
    if (++depth_ > max_depth_)
      throw io_error(cat(prefix_, what_, " is nested deeper than ", max_depth_, " levels"));
  }
  int max_depth_, depth_ = 0;
  std::string prefix_;
  const char* what_;
  std::vector<std::unordered_set<std::string>> keys_;
};

/// Parses JSON text with nlohmann/json after `json_key_check`; any failure is an io_error.
template <typename Json>
Json parse_json(const std::string& text, int max_depth, const std::string& prefix,
                const char* what) {
  json_key_check check(max_depth, prefix, what);
  nlohmann::json::sax_parse(text, &check);
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw io_error(cat(prefix, what, " is not valid JSON: ", e.what()));
  }
}

inline dtype parse_dtype(const std::string& s, const std::string& prefix,
                         const std::string& tensor) {
  if (s == "F16") return dtype::float16;
  if (s == "BF16") return dtype::bfloat16;
  if (s == "F32") return dtype::float32;
  if (s == "F64") return dtype::float64;
  static const char* const other[] = {"BOOL", "U8",  "I8",  "I16",     "U16",     "I32",
                                      "U32",  "I64", "U64", "F8_E5M2", "F8_E4M3", "C64"};
  for (const char* o : other)
    if (s == o)
      throw io_error(cat(prefix, "tensor '", tensor, "' has dtype ", s,
                         ", which netmorph does not read (F16, BF16, F32, F64)"));
  throw io_error(cat(prefix, "tensor '", tensor, "' has the unknown dtype '", s, "'"));
}

/// The tensors (in file order) and metadata of a header, checked against a data section of
/// `data_size` bytes.
inline std::pair<std::vector<tensor_info>, metadata_map> parse_header(const std::string& text,
                                                                      std::uint64_t data_size,
                                                                      const std::string& prefix) {
  const nlohmann::json root = parse_json<nlohmann::json>(text, 3, prefix, "the header");
  if (!root.is_object())
    throw io_error(cat(prefix, "the header must be a JSON object, got ", root.type_name()));
  std::vector<tensor_info> tensors;
  metadata_map metadata;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        throw io_error(cat(prefix, "__metadata__ must be an object, got ", v.type_name()));
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw io_error(cat(prefix, "__metadata__ value of '", m.key(), "' must be a string, got ",
                             m.value().type_name()));
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object())
      throw io_error(cat(prefix, "tensor '", name, "' must be an object, got ", v.type_name()));
    for (auto f = v.begin(); f != v.end(); ++f)
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets")
        throw io_error(cat(prefix, "tensor '", name, "' has the unknown field '", f.key(), "'"));
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field))
        throw io_error(cat(prefix, "tensor '", name, "' has no '", field, "'"));
    tensor_info t;
    t.name = name;
    if (!v["dtype"].is_string())
      throw io_error(
          cat(prefix, "tensor '", name, "': dtype must be a string, got ", v["dtype"].type_name()));
    t.type = parse_dtype(v["dtype"].get<std::string>(), prefix, name);
    const nlohmann::json& shape = v["shape"];
    if (!shape.is_array())
      throw io_error(
          cat(prefix, "tensor '", name, "': shape must be an array, got ", shape.type_name()));
    std::uint64_t count = 1, nonzero = 1;  // nonzero bounds the strides when an extent is 0
    for (std::size_t d = 0; d < shape.size(); ++d) {
      if (!shape[d].is_number_unsigned())
        throw io_error(cat(prefix, "tensor '", name, "': shape[", d,
                           "] must be a non-negative integer, got ", shape[d].dump()));
      const std::uint64_t e = shape[d].get<std::uint64_t>();
      const std::uint64_t limit = std::uint64_t(max_tensor_elements);
      if (e > limit || (e != 0 && nonzero > limit / e))
        throw io_error(cat(prefix, "tensor '", name, "': shape ", shape.dump(),
                           " has more than max_tensor_elements = ", max_tensor_elements,
                           " elements"));
      count *= e;
      if (e != 0) nonzero *= e;
      t.shape.push_back(static_cast<index_type>(e));
    }
    if (t.shape.empty()) t.shape.push_back(1);  // a scalar
    const nlohmann::json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      throw io_error(cat(prefix, "tensor '", name,
                         "': data_offsets must be two non-negative integers, got ", off.dump()));
    t.begin = off[0].get<std::uint64_t>();
    t.end = off[1].get<std::uint64_t>();
    const std::uint64_t bytes = count * dtype_size(t.type);
    if (t.end < t.begin || t.end > data_size)
      throw io_error(cat(prefix, "tensor '", name, "': data_offsets [", t.begin, ", ", t.end,
                         "] lie outside the data section of ", data_size, " bytes"));
    if (t.end - t.begin != bytes)
      throw io_error(cat(prefix, "tensor '", name, "': data_offsets [", t.begin, ", ", t.end,
                         "] hold ", t.end - t.begin, " bytes, its ", to_string(t.type), " shape ",
                         shape.dump(), " needs ", bytes));
    tensors.push_back(std::move(t));
  }
  std::stable_sort(tensors.begin(), tensors.end(), [](const tensor_info& a, const tensor_info& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t at = 0;
  for (const tensor_info& t : tensors) {
    if (t.begin < at)
      throw io_error(cat(prefix, "tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end,
                         "] overlap the previous tensor, which ends at ", at));
    if (t.begin > at)
      throw io_error(cat(prefix, "tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end,
                         "] leave a gap after byte ", at, " (offsets must be contiguous from 0)"));
    at = t.end;
  }
  if (at != data_size)
    throw io_error(
        cat(prefix, "the tensors end at byte ", at, " of a data section of ", data_size, " bytes"));
  return {std::move(tensors), std::move(metadata)};
}

/// A temporary file beside `path` that replaces `path` on `commit()` (rename) and is removed
/// otherwise, so a failed write leaves an existing file exactly as it was.
class replacing_file {
 public:
  replacing_file(std::string path, std::string prefix)
      : path_(std::move(path)), prefix_(std::move(prefix)) {
    std::random_device rd;
    for (int attempt = 0; attempt < 16 && !file_; ++attempt) {
      tmp_ = cat(path_, ".tmp", rd(), rd());
      if (std::FILE* probe = std::fopen(tmp_.c_str(), "rb")) {  // taken: draw another name
        std::fclose(probe);
        continue;
      }
      file_.reset(std::fopen(tmp_.c_str(), "wb"));
      if (!file_ && attempt == 0) errno_ = errno;
    }
    if (!file_)
      throw io_error(cat(prefix_, "cannot create the temporary file '", tmp_, "' beside it (",
                         std::strerror(errno_ ? errno_ : errno), ")"));
  }
  replacing_file(const replacing_file&) = delete;
  replacing_file& operator=(const replacing_file&) = delete;
  ~replacing_file() {
    if (!committed_) {
      file_.reset();
      std::remove(tmp_.c_str());
    }
  }
  void write(const void* data, std::size_t n) {
    if (n && std::fwrite(data, 1, n, file_.get()) != n)
      throw io_error(cat(prefix_, "writing '", tmp_, "' failed (", std::strerror(errno), ")"));
  }
  void commit() {
    bool ok = std::fflush(file_.get()) == 0;
#if defined(__unix__) || defined(__APPLE__)
    ok = ok && ::fsync(fileno(file_.get())) == 0;
#endif
    const int err = errno;
    ok = (std::fclose(file_.release()) == 0) && ok;
    if (!ok) throw io_error(cat(prefix_, "writing '", tmp_, "' failed (", std::strerror(err), ")"));
#if defined(_WIN32)
    std::remove(path_.c_str());  // rename does not replace on Windows
#endif
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      throw io_error(cat(prefix_, "cannot rename '", tmp_, "' to it (", std::strerror(errno), ")"));
    committed_ = true;
  }

 private:
  std::string path_, prefix_, tmp_;
  file_ptr file_;
  bool committed_ = false;
  int errno_ = 0;
};

}  // namespace detail

/// A validated `.safetensors` file (or buffer) whose tensors are read one at a time, straight into
/// their destination. Constructing it reads and checks the whole header; the data stays on disk.
class safetensors_reader {
 public:
  /// Opens and checks `path`; `who` names the caller in messages.
  /// \throws io_error naming `who`, the file and the fault.
  explicit safetensors_reader(const std::string& path,
                              std::string who = "netmorph::io::read_safetensors")
      : who_(std::move(who)), src_(path, who_) {
    init();
  }
  /// Checks a file held in memory (not copied: `data` must outlive the reader).
  safetensors_reader(const void* data, std::size_t size, std::string source = "<memory>",
                     std::string who = "netmorph::io::read_safetensors")
      : who_(std::move(who)), src_(data, size, std::move(source)) {
    init();
  }

  /// The tensors in file (offset) order.
  const std::vector<tensor_info>& tensors() const { return tensors_; }
  const metadata_map& metadata() const { return metadata_; }
  /// The tensor called `name`, or null.
  const tensor_info* find(const std::string& name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  const std::string& source() const { return src_.name(); }
  /// "who: 'file': ", the start of this reader's messages.
  std::string prefix() const { return detail::where(who_, src_.name()); }

  /// Reads `t` into `dst` (`t.size()` elements), converting to `Scalar`: F16/BF16/F32 to float or
  /// double and F64 to double exactly, F64 to float rounded to nearest.
  /// \throws io_error when the bytes cannot be read.
  template <typename Scalar>
  void read_into(const tensor_info& t, Scalar* dst) {
    const std::uint64_t offset = data_start_ + t.begin, bytes = t.end - t.begin;
    if (t.type == native_dtype<Scalar>() && detail::little_endian_host()) {
      if (!src_.read(offset, dst, bytes)) fail_read(t);
      return;
    }
    const std::size_t esz = dtype_size(t.type);
    const std::uint64_t chunk_elems = 1 << 15;
    std::vector<unsigned char> buf(
        static_cast<std::size_t>(std::min<std::uint64_t>(bytes, chunk_elems * esz)));
    for (std::uint64_t done = 0; done < bytes;) {
      const std::uint64_t n = std::min<std::uint64_t>(bytes - done, buf.size());
      if (!src_.read(offset + done, buf.data(), n)) fail_read(t);
      Scalar* out = dst + done / esz;
      for (std::size_t i = 0; i < n / esz; ++i)
        out[i] = detail::decode<Scalar>(buf.data() + i * esz, t.type);
      done += n;
    }
  }
  /// Reads `t` into a new tensor of its shape.
  template <typename Scalar>
  tensor<Scalar> read(const tensor_info& t) {
    tensor<Scalar> out(t.shape);
    read_into(t, out.data());
    return out;
  }

 private:
  void init() {
    const std::string p = prefix();
    unsigned char len_bytes[8];
    if (src_.size() < 8 || !src_.read(0, len_bytes, 8))
      throw io_error(
          cat(p, "truncated: ", src_.size(), " bytes, shorter than the 8-byte header length"));
    const std::uint64_t n = detail::load_le(len_bytes, 8);
    if (n > max_header_bytes)
      throw io_error(
          cat(p, "the header length ", n, " exceeds the limit of ", max_header_bytes, " bytes"));
    if (n > src_.size() - 8)
      throw io_error(cat(p, "the header length ", n, " runs past the end of the file (",
                         src_.size(), " bytes)"));
    std::string text(static_cast<std::size_t>(n), '\0');
    if (!src_.read(8, &text[0], n)) throw io_error(cat(p, "cannot read the header"));
    data_start_ = 8 + n;
    auto parsed = detail::parse_header(text, src_.size() - data_start_, p);
    tensors_ = std::move(parsed.first);
    metadata_ = std::move(parsed.second);
    for (std::size_t i = 0; i < tensors_.size(); ++i)
      index_[tensors_[i].name] = i;
  }
  [[noreturn]] void fail_read(const tensor_info& t) const {
    throw io_error(cat(prefix(), "cannot read the data of tensor '", t.name, "'"));
  }
  template <typename... Args>
  static std::string cat(const Args&... args) {
    return netmorph::detail::cat(args...);
  }

  std::string who_;
  detail::byte_source src_;
  std::uint64_t data_start_ = 0;
  std::vector<tensor_info> tensors_;
  metadata_map metadata_;
  std::unordered_map<std::string, std::size_t> index_;
};

/// Every tensor and the metadata of a `.safetensors` file, converted to `Scalar`.
/// \throws io_error naming the function, the file and the fault (see `safetensors_reader`).
template <typename Scalar>
safetensors_content<Scalar> read_safetensors(const std::string& path) {
  safetensors_reader r(path);
  safetensors_content<Scalar> out;
  out.metadata = r.metadata();
  for (const tensor_info& t : r.tensors())
    out.tensors.push_back({t.name, r.read<Scalar>(t)});
  return out;
}

/// Writes `tensors` (in this order, contiguous from offset 0) and `metadata` to `path` as F32 or
/// F64, streaming from the tensors' storage; the header is padded with spaces to a multiple of 8
/// bytes. The file is written beside `path` and renamed over it at the end, so a failure leaves an
/// existing file at `path` as it was. A rank-0 (empty) tensor is written with shape [0].
/// \throws io_error naming `who`, the file and the fault: an F16/BF16 `type`, an empty, duplicate
///         or reserved ("__metadata__") name, a value that does not fit F32, a failed write.
template <typename Scalar>
void write_safetensors(const std::string& path, const std::vector<tensor_ref<Scalar>>& tensors,
                       const metadata_map& metadata, dtype type = native_dtype<Scalar>(),
                       const std::string& who = "netmorph::io::write_safetensors") {
  using netmorph::detail::cat;
  const std::string p = detail::where(who, path);
  if (type != dtype::float32 && type != dtype::float64)
    throw io_error(cat(p, "netmorph writes F32 or F64, not ", to_string(type)));
  const std::size_t esz = dtype_size(type);
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& kv : metadata)
      m[kv.first] = kv.second;
    header["__metadata__"] = std::move(m);
  }
  std::uint64_t at = 0;
  for (const tensor_ref<Scalar>& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || header.contains(t.name))
      throw io_error(cat(p, t.name.empty() ? "a tensor has an empty name"
                                           : cat("the tensor name '", t.name, "' is ",
                                                 t.name == "__metadata__" ? "reserved" : "taken")));
    if (!t.value) throw io_error(cat(p, "tensor '", t.name, "' is null"));
    const std::uint64_t bytes = std::uint64_t(t.value->size()) * esz;
    header[t.name] = {{"dtype", to_string(type)},
                      {"shape", t.value->rank() ? t.value->shape() : shape_type{0}},
                      {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw io_error(cat(p, "cannot encode the header: ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  if (text.size() > max_header_bytes)
    throw io_error(cat(p, "the header would have ", text.size(), " bytes, more than the limit of ",
                       max_header_bytes));
  detail::replacing_file out(path, p);
  unsigned char len[8];
  detail::store_le(len, text.size(), 8);
  out.write(len, 8);
  out.write(text.data(), text.size());
  const bool direct = type == native_dtype<Scalar>() && detail::little_endian_host();
  std::vector<unsigned char> buf;
  for (const tensor_ref<Scalar>& t : tensors) {
    const Scalar* v = t.value->data();
    const std::size_t n = static_cast<std::size_t>(t.value->size());
    if (direct) {
      out.write(v, n * sizeof(Scalar));
      continue;
    }
    const std::size_t chunk = 1 << 15;
    buf.resize(std::min(n, chunk) * esz);
    for (std::size_t lo = 0; lo < n; lo += chunk) {
      const std::size_t len_elems = std::min(chunk, n - lo);
      for (std::size_t i = 0; i < len_elems; ++i) {
        unsigned char* q = buf.data() + i * esz;
        if (type == dtype::float32) {
          const float f = static_cast<float>(v[lo + i]);
          if (std::isfinite(double(v[lo + i])) && !std::isfinite(f))
            throw io_error(cat(p, "tensor '", t.name, "' holds ", double(v[lo + i]),
                               " at flat index ", lo + i, ", which does not fit F32"));
          std::uint32_t bits;
          std::memcpy(&bits, &f, 4);
          detail::store_le(q, bits, 4);
        } else {
          const double d = static_cast<double>(v[lo + i]);
          std::uint64_t bits;
          std::memcpy(&bits, &d, 8);
          detail::store_le(q, bits, 8);
        }
      }
      out.write(buf.data(), len_elems * esz);
    }
  }
  out.commit();
}

/// Writes a `safetensors_content` (see the overload on references). `type` defaults to the
/// scalar's own F32/F64.
template <typename Scalar>
void write_safetensors(const std::string& path, const safetensors_content<Scalar>& content,
                       dtype type = native_dtype<Scalar>()) {
  std::vector<tensor_ref<Scalar>> refs;
  refs.reserve(content.tensors.size());
  for (const named_tensor<Scalar>& t : content.tensors)
    refs.push_back({t.name, &t.value});
  write_safetensors(path, refs, content.metadata, type);
}

}  // namespace io
}  // namespace netmorph

#endif  // NETMORPH_IO_SAFETENSORS_HPP

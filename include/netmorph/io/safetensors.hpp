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
#include <cstdlib>
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
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
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

#if defined(__unix__) || defined(__APPLE__)
/// "a directory", "a FIFO", ...: what a path that is not a regular file is, for messages.
inline const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "a special file";
}

/// "0644": permission bits as `ls -l` users know them from chmod.
inline std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

/// A file descriptor, closed at the end of its scope.
class unique_fd {
 public:
  explicit unique_fd(int fd = -1) : fd_(fd) {}
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};
#endif

/// Opens `path` for reading and stores its size. Only a regular file (or a symbolic link to one)
/// is read: a directory, FIFO, device or socket is refused by name, found by stat before it is
/// opened (opening a device can act on it: a tape rewinds, a watchdog starts; a socket cannot be
/// opened at all). The file is then opened with O_NONBLOCK, so that a FIFO put in its place does
/// not block the open, and must be the same regular file (device and inode) by fstat; the flag is
/// cleared after that. `prefix` starts the messages.
inline file_ptr open_for_reading(const std::string& path, const std::string& prefix,
                                 std::uint64_t& size) {
#if defined(__unix__) || defined(__APPLE__)
  struct stat named {};
  if (::stat(path.c_str(), &named) != 0)
    throw io_error(cat(prefix, "cannot open the file (", std::strerror(errno), ")"));
  if (!S_ISREG(named.st_mode))
    throw io_error(cat(prefix, "is ", file_kind(named.st_mode),
                       ", not a regular file (netmorph reads regular files only)"));
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (fd.get() < 0)
    throw io_error(cat(prefix, "cannot open the file (", std::strerror(errno), ")"));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw io_error(cat(prefix, "cannot examine the file (", std::strerror(errno), ")"));
  if (!S_ISREG(st.st_mode) || st.st_dev != named.st_dev || st.st_ino != named.st_ino)
    throw io_error(cat(prefix, "changed while it was opened (now ",
                       S_ISREG(st.st_mode) ? "another regular file" : file_kind(st.st_mode),
                       "); netmorph reads regular files only"));
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
    throw io_error(cat(prefix, "cannot open the file (", std::strerror(errno), ")"));
  file_ptr f(::fdopen(fd.get(), "rb"));
  if (!f) throw io_error(cat(prefix, "cannot open the file (", std::strerror(errno), ")"));
  fd.release();  // f owns it now
  size = static_cast<std::uint64_t>(st.st_size);
  return f;
#else
  file_ptr f(std::fopen(path.c_str(), "rb"));
  if (!f) throw io_error(cat(prefix, "cannot open the file (", std::strerror(errno), ")"));
  if (!file_size(f.get(), size)) throw io_error(cat(prefix, "cannot determine the file's size"));
  return f;
#endif
}

/// Bytes of a file or of a caller's buffer, read at offsets.
class byte_source {
 public:
  byte_source(const std::string& path, const std::string& who) : source_(path) {
    file_ = open_for_reading(path, where(who, path), size_);
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

/// ".netmorph-XXXXXX" (six random letters and digits): the name of a temporary file, short and
/// independent of the name it replaces, so that any name up to NAME_MAX can be replaced.
inline std::string temporary_name() {
  static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::uint64_t v = (std::uint64_t(rd()) << 32) ^ rd();
  std::string name = ".netmorph-";
  for (int i = 0; i < 6; ++i, v /= 62)
    name += digits[v % 62];
  return name;
}

/// A new file that replaces `path` on `commit()` and vanishes otherwise, so a failed write leaves
/// an existing file exactly as it was. The rules (see `write_safetensors`, which documents them
/// for its callers):
/// - `path` must be a regular file or not exist; a directory, FIFO, device or socket is refused by
///   name, and so is a file without write permission (no `w` bit in its mode, or not writable by
///   this process), root included.
/// - A symbolic link is followed to its final target, which is replaced in its own directory; the
///   link stays as it was. A link whose target does not exist is refused.
/// - The new file gets the mode and owner of the file it replaces (fchown/fchmod before it is
///   named; a failed fchown refuses the write); a new `path` gets 0666 minus the umask. A file of
///   another owner is refused by the constructor unless the process is root (only root can give
///   the new file that owner), before any data is written.
/// - On POSIX systems the data goes to an unnamed file (Linux O_TMPFILE) in the target's directory
///   and is synced; it is named only at the end: linked as `path` when `path` is new, else linked
///   as `.netmorph-XXXXXX` and renamed over `path`, then the directory is synced. Without
///   O_TMPFILE (other systems, file systems that refuse it, no /proc to name it through) it is a
///   named `.netmorph-XXXXXX` from the start, which a crash or SIGKILL leaves behind; for a new
///   `path` it is renamed with RENAME_NOREPLACE (or linked as `path`, then unlinked).
/// - A `path` that was new at construction is never replaced: when something (a file, a link)
///   took its name while the file was written, `commit` throws and the new file is discarded.
/// `named_temporary` forces the named form (for the tests of that path).
class replacing_file {
 public:
  replacing_file(const std::string& path, std::string prefix, bool named_temporary = false)
      : prefix_(std::move(prefix)) {
#if defined(__unix__) || defined(__APPLE__)
    locate(path);
    create(named_temporary);
#else
    (void)named_temporary;
    const std::size_t slash = path.find_last_of("/\\");
    dir_ = slash == std::string::npos ? std::string(".") : path.substr(0, slash);
    name_ = path;
    for (int attempt = 0; attempt < 64 && !file_; ++attempt) {
      const std::string name = temporary_name();
      const std::string full = slash == std::string::npos ? name : dir_ + "/" + name;
      errno = 0;
      file_.reset(std::fopen(full.c_str(), "wbx"));  // C11 exclusive: fails on a taken name
      if (file_)
        tmp_ = full;
      else if (errno != EEXIST)
        break;
    }
    if (!file_) fail_create(errno);
#endif
  }
  replacing_file(const replacing_file&) = delete;
  replacing_file& operator=(const replacing_file&) = delete;
  ~replacing_file() {
    file_.reset();  // an unnamed file vanishes with its descriptor
    if (!tmp_.empty()) {
#if defined(__unix__) || defined(__APPLE__)
      ::unlinkat(dir_fd_.get(), tmp_.c_str(), 0);
#else
      std::remove(tmp_.c_str());
#endif
    }
  }
  void write(const void* data, std::size_t n) {
    if (n && std::fwrite(data, 1, n, file_.get()) != n) fail_write(errno);
  }
  /// Syncs the data, gives it the replaced file's mode and owner, and names it `path`.
  void commit() {
#if defined(__unix__) || defined(__APPLE__)
    const int fd = ::fileno(file_.get());
    if (std::fflush(file_.get()) != 0) fail_write(errno);
    if (replaces_) {
      struct stat now {};
      if (::fstat(fd, &now) != 0) fail_write(errno);
      if ((now.st_uid != old_.st_uid || now.st_gid != old_.st_gid) &&
          ::fchown(fd, old_.st_uid, old_.st_gid) != 0)
        fail_owner(old_, errno);
      if (::fchmod(fd, old_.st_mode & 07777) != 0)
        throw io_error(cat(prefix_, "cannot give the new file the mode ", octal_mode(old_.st_mode),
                           " of the file it replaces (", std::strerror(errno),
                           "); the file was left as it was"));
    }
    if (::fsync(fd) != 0) fail_write(errno);  // data, mode and owner, before the file has a name
    if (!replaces_) {  // a new path is named without replacing whatever took the name meanwhile
      if (tmp_.empty() ? link_unnamed(fd, name_) : name_temporary()) return finish();
      if (errno == EEXIST) fail_appeared();
      fail_name(errno);
    }
    if (tmp_.empty()) {  // unnamed: a temporary name to rename from
      for (int attempt = 0; tmp_.empty() && attempt < 64; ++attempt) {
        const std::string name = temporary_name();
        if (link_unnamed(fd, name))
          tmp_ = name;
        else if (errno != EEXIST)
          fail_name(errno);
      }
      if (tmp_.empty()) fail_name(EEXIST);
    }
    if (::renameat(dir_fd_.get(), tmp_.c_str(), dir_fd_.get(), name_.c_str()) != 0)
      throw io_error(cat(prefix_, "cannot rename the new file '", tmp_, "' over it (",
                         std::strerror(errno), ")"));
    tmp_.clear();
    finish();
#else
    int err = std::fflush(file_.get()) == 0 ? 0 : errno;
    if (std::fclose(file_.release()) != 0 && err == 0) err = errno;
    if (err != 0) fail_write(err);
#if defined(_WIN32)
    std::remove(name_.c_str());  // rename does not replace on Windows
#endif
    if (std::rename(tmp_.c_str(), name_.c_str()) != 0)
      throw io_error(cat(prefix_, "cannot rename the new file '", tmp_, "' over it (",
                         std::strerror(errno), ")"));
    tmp_.clear();
#endif
  }

 private:
#if defined(__unix__) || defined(__APPLE__)
  /// Checks `path` against the rules and sets the directory and name of the file to write: the
  /// final target of a symbolic link, whose mode and owner `old_` keeps.
  void locate(const std::string& path) {
    std::string target = path;
    struct stat lst {};
    if (::lstat(path.c_str(), &lst) != 0) {
      if (errno != ENOENT)
        throw io_error(cat(prefix_, "cannot examine the path (", std::strerror(errno), ")"));
    } else {
      struct stat st = lst;
      if (S_ISLNK(lst.st_mode) && ::stat(path.c_str(), &st) != 0) {
        const int err = errno;
        if (err == ENOENT)
          throw io_error(cat(prefix_, "is a symbolic link to '", link_text(path),
                             "', which does not exist (netmorph replaces the target of a link, "
                             "it does not create it)"));
        throw io_error(cat(prefix_, "cannot follow the symbolic link (", std::strerror(err), ")"));
      }
      if (!S_ISREG(st.st_mode))
        throw io_error(cat(prefix_, "is ", file_kind(st.st_mode),
                           ", not a regular file (netmorph replaces regular files only)"));
      // Root may write any file, and a rename needs no permission on the file: a read-only file
      // would be replaced silently without this check.
      if ((st.st_mode & 0222) == 0)
        throw io_error(cat(prefix_, "is read-only (mode ", octal_mode(st.st_mode),
                           "); netmorph does not replace a file without write permission"));
      if (::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) != 0)
        throw io_error(cat(prefix_, "is not writable by this process (mode ",
                           octal_mode(st.st_mode), ", ", std::strerror(errno),
                           "); netmorph does not replace a file it could not write"));
      // Only root may give a file to another user: refused now rather than after the whole
      // file is written (commit's fchown still reports any other failure).
      if (::geteuid() != 0 && st.st_uid != ::geteuid()) fail_owner(st, EPERM);
      if (S_ISLNK(lst.st_mode)) {  // after the checks: realpath fails on /proc/self/fd/<pipe>
        std::unique_ptr<char, void (*)(void*)> real(::realpath(path.c_str(), nullptr), std::free);
        if (!real)
          throw io_error(
              cat(prefix_, "cannot resolve the symbolic link (", std::strerror(errno), ")"));
        target = real.get();
      }
      old_ = st;
      replaces_ = true;
    }
    const std::size_t slash = target.find_last_of('/');
    dir_ = slash == std::string::npos ? std::string(".")
           : slash == 0               ? std::string("/")
                                      : target.substr(0, slash);
    name_ = slash == std::string::npos ? target : target.substr(slash + 1);
    if (name_.empty() || name_ == "." || name_ == "..")
      throw io_error(cat(prefix_, "does not name a file"));
  }
  /// Opens the directory and the new file in it: unnamed (O_TMPFILE) where the system and the file
  /// system allow it and `named` is false, else `.netmorph-XXXXXX`.
  void create(bool named) {
    dir_fd_.reset(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir_fd_.get() < 0) fail_create(errno);
    // A file that replaces another stays private until it gets that file's mode.
    const mode_t mode = replaces_ ? 0600 : 0666;
    unique_fd fd;
#if defined(O_TMPFILE)
    // The unnamed file is named through /proc/self/fd/N at the end (linkat with AT_EMPTY_PATH
    // would need CAP_DAC_READ_SEARCH): without /proc, the named form from the start.
    if (!named && ::access("/proc/self/fd", X_OK) == 0) {
      fd.reset(::openat(dir_fd_.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode));
      if (fd.get() < 0 && errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        fail_create(errno);
    }
#else
    (void)named;
#endif
    for (int attempt = 0; fd.get() < 0 && attempt < 64; ++attempt) {
      const std::string name = temporary_name();
      fd.reset(
          ::openat(dir_fd_.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
      if (fd.get() >= 0) tmp_ = name;
      if (fd.get() < 0 && errno != EEXIST) break;
    }
    if (fd.get() < 0) fail_create(errno);
    file_.reset(::fdopen(fd.get(), "wb"));
    if (!file_) {
      const int err = errno;  // called by the constructor: no destructor removes a named file
      if (!tmp_.empty()) ::unlinkat(dir_fd_.get(), tmp_.c_str(), 0);
      fail_create(err);
    }
    fd.release();  // file_ owns it now
  }
  /// What the link `path` holds, for messages.
  static std::string link_text(const std::string& path) {
    std::vector<char> buf(4096);
    const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    return n < 0 ? std::string("?") : std::string(buf.data(), static_cast<std::size_t>(n));
  }
  /// Gives the unnamed file `fd` the name `name` in the directory; false (errno set) on failure.
  bool link_unnamed(int fd, const std::string& name) const {
    const std::string proc = cat("/proc/self/fd/", fd);
    return ::linkat(AT_FDCWD, proc.c_str(), dir_fd_.get(), name.c_str(), AT_SYMLINK_FOLLOW) == 0;
  }
  /// Names the temporary file `tmp_` (of a new path) `name_` unless that name is taken; false
  /// (errno set) on failure. renameat2/renameatx_np refuse a taken name in one step; elsewhere,
  /// and on file systems that do not support them, linkat does and the temporary name is removed.
  bool name_temporary() {
    const int dir = dir_fd_.get();
#if defined(__linux__) && defined(__GLIBC__) && defined(RENAME_NOREPLACE) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28))
    if (::renameat2(dir, tmp_.c_str(), dir, name_.c_str(), RENAME_NOREPLACE) == 0) {
      tmp_.clear();
      return true;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP && errno != EOPNOTSUPP) return false;
#elif defined(__APPLE__) && defined(RENAME_EXCL)
    if (::renameatx_np(dir, tmp_.c_str(), dir, name_.c_str(), RENAME_EXCL) == 0) {
      tmp_.clear();
      return true;
    }
    if (errno != EINVAL && errno != ENOTSUP) return false;
#endif
    if (::linkat(dir, tmp_.c_str(), dir, name_.c_str(), 0) != 0) return false;
    ::unlinkat(dir, tmp_.c_str(), 0);  // the file has its name; the temporary one goes
    tmp_.clear();
    return true;
  }
  /// The file has its name: syncs the directory (best effort: the rename is done, and some file
  /// systems refuse fsync on a directory) and closes the file. After fsync the close should not
  /// fail; if it does, the write is reported as failed.
  void finish() {
    ::fsync(dir_fd_.get());
    if (std::fclose(file_.release()) != 0)
      throw io_error(cat(prefix_, "writing the new file failed when it was closed (",
                         std::strerror(errno), "); it has its name"));
  }
  [[noreturn]] void fail_appeared() const {
    throw io_error(cat(prefix_, "appeared while the file was written; nothing was replaced"));
  }
  [[noreturn]] void fail_owner(const struct stat& st, int err) const {
    throw io_error(cat(prefix_, "cannot give the new file the owner ", st.st_uid, ":", st.st_gid,
                       " of the file it replaces (", std::strerror(err),
                       "); the file was left as it was"));
  }
  [[noreturn]] void fail_name(int err) const {
    throw io_error(
        cat(prefix_, "cannot give the new file a name in '", dir_, "' (", std::strerror(err), ")"));
  }
#endif
  [[noreturn]] void fail_create(int err) const {
    throw io_error(cat(prefix_, "cannot create the temporary file in '", dir_, "' (",
                       std::strerror(err), ")"));
  }
  [[noreturn]] void fail_write(int err) const {
    throw io_error(cat(prefix_, "writing ",
                       tmp_.empty() ? cat("the new (unnamed) file in '", dir_, "'")
                                    : cat("the new file '", tmp_, "' in '", dir_, "'"),
                       " failed (", std::strerror(err), ")"));
  }

  std::string prefix_;
  std::string dir_, name_;  // where the replaced file is: a link's target
  std::string tmp_;         // the temporary name while the file has one
  file_ptr file_;
#if defined(__unix__) || defined(__APPLE__)
  unique_fd dir_fd_;
  struct stat old_ {};
  bool replaces_ = false;  // `name_` exists (old_ holds its mode and owner)
#endif
};

}  // namespace detail

/// A validated `.safetensors` file (or buffer) whose tensors are read one at a time, straight into
/// their destination. Constructing it reads and checks the whole header; the data stays on disk.
class safetensors_reader {
 public:
  /// Opens and checks `path`; `who` names the caller in messages. Only a regular file (or a
  /// symbolic link to one) is read: a directory, FIFO, device or socket is refused by name without
  /// being opened, and a FIFO without a writer does not block.
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
/// bytes. A rank-0 (empty) tensor is written with shape [0].
///
/// How `path` is replaced (the same for `save` and `write_idx`):
/// - `path` is a regular file or does not exist. A directory, FIFO, device (/dev/null) or socket
///   is refused by name, and so is a read-only file (no `w` in its mode, for root too) or one this
///   process may not write.
/// - A symbolic link is followed (through any chain) and its final target is replaced, in the
///   target's directory; the link itself stays. A link whose target does not exist is refused.
/// - The new file gets the mode and owner of the file it replaces; a new file gets 0666 minus the
///   umask. When the owner cannot be kept (not root, another owner) the write is refused before
///   any data is written.
/// - The data goes to a new file in the same directory, which is synced and only then named:
///   renamed over `path` in one step (linked as `path` when `path` is new), and the directory is
///   synced. A failure leaves an existing file as it was. A `path` that did not exist when the
///   write began and appears before it ends (a file or link made meanwhile) is not replaced: the
///   write fails and the new file is discarded. On Linux the new file is unnamed while
///   it is written (O_TMPFILE) and gets a name in the last two system calls (a link as
///   `.netmorph-XXXXXX`, the rename), so even SIGKILL leaves no temporary file behind; where the
///   system or the file system has no O_TMPFILE it is `.netmorph-XXXXXX` from the start (removed
///   after a failure, left behind by a crash or SIGKILL). The temporary name is short, so any
///   name up to NAME_MAX works.
/// - Other hard links to a replaced file keep its old content.
/// \throws io_error naming `who`, the file and the fault: an F16/BF16 `type`, an empty, duplicate
///         or reserved ("__metadata__") name, a value that does not fit F32, a `path` the rules
///         above refuse, a failed write.
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

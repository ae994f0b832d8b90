#ifndef NETMORPH_IO_IDX_HPP
#define NETMORPH_IO_IDX_HPP

/// \file idx.hpp
/// Reading and writing IDX files, the format of MNIST and Fashion-MNIST: a big-endian magic
/// `0x00 0x00 <type> <ndim>`, `ndim` big-endian uint32 extents, then the values in C order. Files
/// may be gzip-compressed (recognised by the gzip magic `1f 8b`, concatenated members allowed).
/// Only element type `0x08` (unsigned byte) is read. The reader checks the header before it
/// allocates anything: 1 to 4 dimensions, none of them 0, at most `max_bytes` values (default
/// `max_idx_bytes`, 1 GiB), and exactly as many data bytes as the header declares, no fewer
/// (truncated) and no more (trailing bytes). A gzip stream is inflated in chunks into a buffer that
/// grows only as data arrives and never beyond what the header declares, so a gzip bomb stops at
/// its first bytes past the declared size.

#include <netmorph/detail/message.hpp>
#include <netmorph/error.hpp>
#include <netmorph/io/safetensors.hpp>
#include <netmorph/nn/model.hpp>
#include <netmorph/tensor.hpp>

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace netmorph {
namespace io {

/// The default largest number of data bytes (values) the IDX reader accepts: 1 GiB.
inline constexpr std::uint64_t max_idx_bytes = std::uint64_t(1) << 30;

/// The content of an IDX file: its extents (outermost first) and its unsigned-byte values in C
/// order, `values.size() == prod(shape)`.
struct idx_data {
  shape_type shape;
  std::vector<std::uint8_t> values;
};

namespace detail {

using netmorph::detail::element_count;
using netmorph::detail::shape_string;

/// The element type's name of an IDX type code, or null for a code the format does not define.
inline const char* idx_type_name(unsigned code) {
  switch (code) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return nullptr;
  }
}

inline std::string hex_byte(unsigned b) {
  static const char digits[] = "0123456789abcdef";
  return std::string("0x") + digits[(b >> 4) & 0xfu] + digits[b & 0xfu];
}

/// The error of a failed read of a file (errno says why, e.g. "Is a directory").
inline io_error read_failure(const std::string& prefix, const std::string& what) {
  return io_error(cat(prefix, "cannot read ", what, " (", std::strerror(errno), ")"));
}

/// What an IDX header declares.
struct idx_header {
  shape_type shape;
  std::uint64_t header_bytes = 0;  // 4 + 4 * ndim
  std::uint64_t data_bytes = 0;    // prod(shape)
};

/// The header bytes to have before `parse_idx_header` can decide, given the first `avail`: 4, then
/// 4 + 4 * ndim for a supported ndim (for another, the first 4 are enough to refuse it).
inline std::size_t idx_header_bytes(const unsigned char* p, std::size_t avail) {
  return avail < 4 || p[3] == 0 || p[3] > 4 ? 4 : 4 + 4 * std::size_t(p[3]);
}

/// Parses and checks the header at the start of `p` (`avail` bytes available there, at least
/// `idx_header_bytes(p, avail)` unless the file is shorter: then it is truncated).
inline idx_header parse_idx_header(const unsigned char* p, std::size_t avail,
                                   std::uint64_t max_bytes, const std::string& prefix) {
  if (avail < 4)
    throw io_error(cat(prefix, "truncated: ", avail, " bytes, shorter than the 4-byte magic"));
  if (p[0] != 0 || p[1] != 0)
    throw io_error(cat(prefix, "wrong magic ", hex_byte(p[0]), " ", hex_byte(p[1]), " ",
                       hex_byte(p[2]), " ", hex_byte(p[3]),
                       " (an IDX file starts with 0x00 0x00 <type> <ndim>)"));
  if (p[2] != 0x08) {
    const char* name = idx_type_name(p[2]);
    throw io_error(name ? cat(prefix, "element type ", hex_byte(p[2]), " (", name,
                              ") is not read by netmorph (only 0x08, unsigned byte)")
                        : cat(prefix, "unknown element type ", hex_byte(p[2]),
                              " (IDX defines 0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x0e)"));
  }
  const unsigned ndim = p[3];
  if (ndim == 0 || ndim > 4)
    throw io_error(cat(prefix, "ndim ", ndim, " is not supported (1 to 4 dimensions)"));
  idx_header h;
  h.header_bytes = 4 + 4 * std::uint64_t(ndim);
  if (avail < h.header_bytes)
    throw io_error(cat(prefix, "truncated: ", avail, " bytes, shorter than the ", h.header_bytes,
                       "-byte header of ", ndim, " dimensions"));
  for (unsigned d = 0; d < ndim; ++d) {
    const unsigned char* q = p + 4 + 4 * d;
    const std::uint32_t e = (std::uint32_t(q[0]) << 24) | (std::uint32_t(q[1]) << 16) |
                            (std::uint32_t(q[2]) << 8) | std::uint32_t(q[3]);
    h.shape.push_back(static_cast<index_type>(e));
  }
  for (unsigned d = 0; d < ndim; ++d)
    if (h.shape[d] == 0)
      throw io_error(cat(prefix, "dimension ", d, " of shape ", shape_string(h.shape), " is 0"));
  const std::uint64_t limit = std::min(max_bytes, std::uint64_t(max_tensor_elements));
  std::uint64_t count = 1;
  for (index_type e : h.shape) {
    const std::uint64_t u = static_cast<std::uint64_t>(e);
    if (count > limit / u)
      throw io_error(cat(prefix, "shape ", shape_string(h.shape), " has ", element_count(h.shape),
                         " values, more than the reader's limit of ", limit));
    count *= u;
  }
  h.data_bytes = count;
  return h;
}

/// Checks that `size` bytes (of the file, or of the decompressed stream) hold exactly the header
/// and the data it declares.
inline void check_idx_size(const idx_header& h, std::uint64_t size, const char* what,
                           const std::string& prefix) {
  const std::uint64_t data = size - h.header_bytes;  // size >= header_bytes: the header was read
  if (data < h.data_bytes)
    throw io_error(cat(prefix, "truncated: shape ", shape_string(h.shape), " needs ", h.data_bytes,
                       " data bytes after the ", h.header_bytes, "-byte header, ", what, " has ",
                       data));
  if (data > h.data_bytes)
    throw io_error(cat(prefix, "trailing bytes: ", data - h.data_bytes, " bytes after the ",
                       h.data_bytes, " data bytes of shape ", shape_string(h.shape), " (", what,
                       " has ", size, " bytes)"));
}

/// Inflates the gzip stream(s) of `src` into header and data, checking the header as soon as its
/// bytes are out. The output buffer grows (doubling) only as data arrives and never beyond the size
/// the header declares; one byte more is a trailing-bytes error, so a gzip bomb costs at most the
/// declared size (itself at most `max_bytes` values) before it is refused.
inline idx_data inflate_idx(byte_source& src, std::uint64_t max_bytes, const std::string& prefix) {
  struct stream {
    z_stream z{};
    bool open = false;
    ~stream() {
      if (open) inflateEnd(&z);
    }
  } s;
  if (inflateInit2(&s.z, 16 + MAX_WBITS) != Z_OK)
    throw io_error(cat(prefix, "cannot initialise zlib"));
  s.open = true;

  std::vector<unsigned char> in(
      static_cast<std::size_t>(std::min<std::uint64_t>(src.size(), std::uint64_t(1) << 16)));
  std::uint64_t in_at = 0;  // bytes of src handed to zlib so far
  std::vector<unsigned char> out(std::size_t(1) << 12);
  std::uint64_t used = 0;
  bool have_header = false;
  idx_header h;
  std::uint64_t limit = 0;  // once the header is known: header_bytes + data_bytes

  const auto position = [&] { return in_at - s.z.avail_in; };
  const auto corrupt = [&](const char* what) {
    return io_error(cat(prefix, "corrupt gzip stream at compressed byte ", position(), ": ",
                        s.z.msg ? s.z.msg : what));
  };
  const auto trailing = [&] {
    return io_error(cat(prefix, "trailing bytes: the decompressed data runs past the ",
                        h.header_bytes, "-byte header and ", h.data_bytes, " data bytes of shape ",
                        shape_string(h.shape)));
  };
  for (;;) {
    if (s.z.avail_in == 0 && in_at < src.size()) {
      const std::uint64_t n = std::min<std::uint64_t>(src.size() - in_at, in.size());
      if (!src.read(in_at, in.data(), n))
        throw read_failure(prefix, cat("compressed byte ", in_at));
      in_at += n;
      s.z.next_in = in.data();
      s.z.avail_in = static_cast<uInt>(n);
    }
    // Room for the next output: up to the declared size, or one spare byte once it is reached
    // (anything written there is data the header did not declare).
    unsigned char spare;
    const bool full = have_header && used == limit;
    std::uint64_t end = out.size();
    if (!full && used == out.size()) {
      end = std::uint64_t(out.size()) * 2;
      if (have_header) end = std::min(end, limit);
      out.resize(static_cast<std::size_t>(end));
    }
    if (have_header) end = std::min(end, limit);
    const std::uint64_t room = full ? 1 : std::min<std::uint64_t>(end - used, 1u << 30);
    s.z.next_out = full ? &spare : out.data() + used;
    s.z.avail_out = static_cast<uInt>(room);
    const int ret = inflate(&s.z, Z_NO_FLUSH);
    const std::uint64_t produced = room - s.z.avail_out;
    if (ret == Z_NEED_DICT) throw corrupt("a preset dictionary is required");
    if (ret == Z_DATA_ERROR) throw corrupt("invalid data");
    if (ret == Z_MEM_ERROR) throw io_error(cat(prefix, "zlib ran out of memory"));
    if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR) throw corrupt("inflate failed");
    if (full && produced > 0) throw trailing();
    if (!full) used += produced;
    if (!have_header &&
        used >= idx_header_bytes(out.data(),
                                 static_cast<std::size_t>(std::min<std::uint64_t>(used, 4)))) {
      h = parse_idx_header(out.data(), static_cast<std::size_t>(used), max_bytes, prefix);
      have_header = true;
      limit = h.header_bytes + h.data_bytes;
      if (used > limit) throw trailing();
    }
    if (ret == Z_STREAM_END) {
      // Another gzip member may follow (gzip allows concatenation); anything else is refused.
      const std::uint64_t at = position();
      if (at == src.size()) break;
      unsigned char magic[2];
      if (src.size() - at < 2 || !src.read(at, magic, 2) || magic[0] != 0x1f || magic[1] != 0x8b)
        throw io_error(cat(prefix, src.size() - at, " bytes after the end of the gzip stream (at ",
                           "compressed byte ", at, ") are not another gzip member"));
      if (inflateReset(&s.z) != Z_OK) throw io_error(cat(prefix, "cannot reset zlib"));
      continue;
    }
    if (produced == 0 && s.z.avail_in == 0 && in_at == src.size())
      throw io_error(cat(prefix, "truncated gzip stream: the ", src.size(),
                         " compressed bytes end before the stream does, after ", used,
                         " decompressed bytes"));
  }
  if (!have_header)  // the stream ended inside the header: this throws "truncated"
    parse_idx_header(out.data(), static_cast<std::size_t>(used), max_bytes, prefix);
  check_idx_size(h, used, "the decompressed data", prefix);
  idx_data d;
  d.shape = std::move(h.shape);
  out.resize(static_cast<std::size_t>(used));
  out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(h.header_bytes));
  d.values = std::move(out);
  return d;
}

/// Reads a plain or gzip-compressed IDX source (see the file comment).
inline idx_data read_idx(byte_source& src, std::uint64_t max_bytes, const std::string& prefix) {
  unsigned char head[20];
  const std::size_t first = static_cast<std::size_t>(std::min<std::uint64_t>(src.size(), 4));
  if (!src.read(0, head, first)) throw read_failure(prefix, "the header");
  if (first >= 2 && head[0] == 0x1f && head[1] == 0x8b) return inflate_idx(src, max_bytes, prefix);
  std::size_t avail = first;
  if (first == 4) {
    avail = static_cast<std::size_t>(
        std::min<std::uint64_t>(src.size(), idx_header_bytes(head, first)));
    if (!src.read(4, head + 4, avail - 4)) throw read_failure(prefix, "the header");
  }
  idx_header h = parse_idx_header(head, avail, max_bytes, prefix);
  check_idx_size(h, src.size(), "the file", prefix);
  idx_data d;
  d.values.resize(static_cast<std::size_t>(h.data_bytes));
  if (!src.read(h.header_bytes, d.values.data(), h.data_bytes))
    throw read_failure(prefix, cat("the ", h.data_bytes, " data bytes"));
  d.shape = std::move(h.shape);
  return d;
}

/// Images `(N, 1, H, W)` with values `k * scale` from IDX content of shape `(N, H, W)`.
template <typename Scalar>
tensor<Scalar> idx_to_images(const idx_data& d, Scalar scale, const std::string& prefix) {
  if (!std::isfinite(double(scale)))
    throw value_error(cat(prefix, "scale must be finite, got ", double(scale)));
  if (d.shape.size() != 3)
    throw io_error(cat(prefix, "images must have shape (N, H, W), got ", shape_string(d.shape)));
  tensor<Scalar> x({d.shape[0], 1, d.shape[1], d.shape[2]});
  Scalar* out = x.data();
  for (std::size_t i = 0; i < d.values.size(); ++i)
    out[i] = static_cast<Scalar>(d.values[i]) * scale;
  return x;
}

/// Labels (one int per sample) from IDX content of shape `(N)`.
inline std::vector<int> idx_to_labels(const idx_data& d, const std::string& prefix) {
  if (d.shape.size() != 1)
    throw io_error(cat(prefix, "labels must have shape (N), got ", shape_string(d.shape)));
  return std::vector<int>(d.values.begin(), d.values.end());
}

}  // namespace detail

/// The content of an IDX file held in memory (plain or gzip); `what` names it in messages.
/// \throws io_error naming the function, `what` and the fault: wrong magic, an element type other
///         than 0x08, ndim 0 or > 4, a dimension of 0, more than `max_bytes` values, data shorter
///         (truncated) or longer (trailing bytes) than the header declares, a corrupt or truncated
///         gzip stream.
inline idx_data read_idx_bytes(const std::uint8_t* data, std::size_t size,
                               const std::string& what = "<memory>",
                               std::uint64_t max_bytes = max_idx_bytes) {
  static const unsigned char none = 0;
  detail::byte_source src(size ? data : &none, size, what);
  return detail::read_idx(src, max_bytes, detail::where("netmorph::io::read_idx_bytes", what));
}

/// The content of the IDX file `path` (plain or gzip, see `read_idx_bytes`).
/// \throws io_error naming the function, the file and the fault, also when it cannot be opened or
///         is not a regular file (a directory, FIFO, device or socket is refused before a byte is
///         read; a FIFO does not block). A symbolic link to a regular file is read.
inline idx_data read_idx(const std::string& path, std::uint64_t max_bytes = max_idx_bytes) {
  const char* who = "netmorph::io::read_idx";
  detail::byte_source src(path, who);
  return detail::read_idx(src, max_bytes, detail::where(who, path));
}

/// Images `(N, 1, H, W)` (NCHW, the input of `nn::model`) with values `k * scale` from an IDX file
/// of shape `(N, H, W)` such as `train-images-idx3-ubyte[.gz]`; the default scale maps 0..255 to
/// [0, 1].
/// \throws io_error as `read_idx`, and when the file is not three-dimensional; value_error for a
///         non-finite `scale`.
template <typename Scalar>
tensor<Scalar> read_idx_images(const std::string& path, Scalar scale = Scalar(1) / Scalar(255),
                               std::uint64_t max_bytes = max_idx_bytes) {
  const char* who = "netmorph::io::read_idx_images";
  detail::byte_source src(path, who);
  const std::string prefix = detail::where(who, path);
  return detail::idx_to_images(detail::read_idx(src, max_bytes, prefix), scale, prefix);
}

/// Labels (0..255, one per sample; no number of classes is assumed) from an IDX file of shape
/// `(N)` such as `train-labels-idx1-ubyte[.gz]`.
/// \throws io_error as `read_idx`, and when the file is not one-dimensional.
inline std::vector<int> read_idx_labels(const std::string& path,
                                        std::uint64_t max_bytes = max_idx_bytes) {
  const char* who = "netmorph::io::read_idx_labels";
  detail::byte_source src(path, who);
  const std::string prefix = detail::where(who, path);
  return detail::idx_to_labels(detail::read_idx(src, max_bytes, prefix), prefix);
}

/// An `nn::dataset` (images `(N, 1, H, W)` scaled by `scale`, labels) from an images and a labels
/// IDX file, ready for `nn::train_epoch` and `nn::evaluate`.
/// \throws io_error as `read_idx_images` and `read_idx_labels`, and when their counts differ.
template <typename Scalar>
nn::dataset<Scalar> read_idx_dataset(const std::string& images_path, const std::string& labels_path,
                                     Scalar scale = Scalar(1) / Scalar(255)) {
  nn::dataset<Scalar> d{read_idx_images<Scalar>(images_path, scale), read_idx_labels(labels_path)};
  if (static_cast<index_type>(d.labels.size()) != d.size())
    throw io_error(netmorph::detail::cat("netmorph::io::read_idx_dataset: '", images_path,
                                         "' holds ", d.size(), " images, '", labels_path,
                                         "' holds ", d.labels.size(), " labels"));
  return d;
}

/// Writes `values` (C order) of `shape` to `path` as a plain IDX file of unsigned bytes. `path` is
/// replaced as `write_safetensors` documents (a regular file or a new path only, a symbolic link's
/// target, mode and owner kept, written unnamed and renamed over it at the end), so a failure
/// leaves an existing file as it was.
/// \throws io_error naming the function, the file and the fault: ndim 0 or > 4, an extent of 0 or
///         above 2^32 - 1, a number of values other than `prod(shape)`, a `path` those rules
///         refuse, a failed write.
inline void write_idx(const std::string& path, const shape_type& shape,
                      const std::vector<std::uint8_t>& values) {
  using netmorph::detail::cat;
  using netmorph::detail::shape_string;
  const std::string p = detail::where("netmorph::io::write_idx", path);
  if (shape.empty() || shape.size() > 4)
    throw io_error(
        cat(p, "shape ", shape_string(shape), " has ", shape.size(), " dimensions (IDX: 1 to 4)"));
  std::uint64_t count = 1;
  bool fits = true;  // prod(shape) <= values.size(), computed without overflow
  for (index_type e : shape) {
    if (e < 1 || std::uint64_t(e) > std::numeric_limits<std::uint32_t>::max())
      throw io_error(
          cat(p, "shape ", shape_string(shape), " has the extent ", e, " (IDX: 1 to 4294967295)"));
    if (!fits) continue;
    if (count > values.size() / std::uint64_t(e))
      fits = false;
    else
      count *= std::uint64_t(e);
  }
  if (!fits || count != values.size())
    throw io_error(cat(p, "shape ", shape_string(shape), " holds ",
                       netmorph::detail::element_count(shape), " values, got ", values.size()));
  unsigned char head[20] = {0, 0, 0x08, static_cast<unsigned char>(shape.size())};
  for (std::size_t d = 0; d < shape.size(); ++d) {
    const std::uint64_t e = static_cast<std::uint64_t>(shape[d]);
    for (int b = 0; b < 4; ++b)
      head[4 + 4 * d + std::size_t(b)] = static_cast<unsigned char>((e >> (24 - 8 * b)) & 0xffu);
  }
  detail::replacing_file out(path, p);
  out.write(head, 4 + 4 * shape.size());
  out.write(values.data(), values.size());
  out.commit();
}

/// Writes `d` as a plain IDX file (see the overload on shape and values).
inline void write_idx(const std::string& path, const idx_data& d) {
  write_idx(path, d.shape, d.values);
}

}  // namespace io
}  // namespace netmorph

#endif  // NETMORPH_IO_IDX_HPP

// libFuzzer harness: netmorph::io::read_idx_bytes on arbitrary bytes (plain or gzip), then the
// content as images or labels. Anything but success or netmorph::io_error is a bug, and so is a
// result whose values do not match its shape.

#include <netmorph/io/idx.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    // A small limit keeps each input cheap; the checks are the same as at 1 GiB.
    const netmorph::io::idx_data d = netmorph::io::read_idx_bytes(data, size, "fuzz", 1u << 22);
    std::size_t count = 1;
    for (netmorph::index_type e : d.shape) {
      if (e < 1) std::abort();
      count *= static_cast<std::size_t>(e);
    }
    if (d.shape.empty() || d.shape.size() > 4 || count != d.values.size()) std::abort();
    if (d.shape.size() == 3) (void)netmorph::io::detail::idx_to_images<float>(d, 1.0f / 255, "");
    if (d.shape.size() == 1) (void)netmorph::io::detail::idx_to_labels(d, "");
  } catch (const netmorph::io_error&) {
  }
  return 0;
}

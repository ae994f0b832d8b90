// libFuzzer harness: netmorph::io::safetensors_reader on arbitrary bytes, then every tensor read
// as float and double. Anything but success or netmorph::io_error is a bug.

#include <netmorph/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    netmorph::io::safetensors_reader r(data, size, "fuzz");
    for (const netmorph::io::tensor_info& t : r.tensors()) {
      (void)r.read<float>(t);
      (void)r.read<double>(t);
    }
  } catch (const netmorph::io_error&) {
  }
  return 0;
}

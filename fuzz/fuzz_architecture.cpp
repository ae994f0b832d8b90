// libFuzzer harness: netmorph's architecture reader on arbitrary JSON text. The tensors are
// supplied as small random-free fills of the shape the architecture asks for (refused above a
// million elements, as a file of that size would be), so the fuzzer reaches every layer kind.
// Anything but success or netmorph::io_error is a bug.

#include <netmorph/io/architecture.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const netmorph::io::detail::tensor_provider<float> provide =
      [](const std::string& name, const netmorph::shape_type& shape) {
        if (netmorph::detail::element_count(shape) > 1e6)
          throw netmorph::io_error("fuzz: tensor '" + name + "' too large");
        return netmorph::tensor<float>(shape, 0.5f);
      };
  try {
    netmorph::nn::model<float> m =
        netmorph::io::detail::build_model<float>(text, provide, "fuzz: ");
    (void)netmorph::io::architecture_json(m);
  } catch (const netmorph::io_error&) {
  }
  return 0;
}

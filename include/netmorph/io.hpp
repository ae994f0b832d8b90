#ifndef NETMORPH_IO_HPP
#define NETMORPH_IO_HPP

/// \file io.hpp
/// Umbrella header of `netmorph::io` (target `netmorph::io`: adds nlohmann/json): `.safetensors`
/// files, netmorph's architecture description, and `save`/`load` of whole models.

#include <netmorph/io/architecture.hpp>
#include <netmorph/io/model_file.hpp>
#include <netmorph/io/safetensors.hpp>

#endif  // NETMORPH_IO_HPP

#ifndef NETMORPH_IO_HPP
#define NETMORPH_IO_HPP

/// \file io.hpp
/// Umbrella header of `netmorph::io` (target `netmorph::io`: adds nlohmann/json and zlib):
/// `.safetensors` files, netmorph's architecture description, `save`/`load` of whole models, and
/// IDX data files (MNIST, Fashion-MNIST; plain or gzip) as images and labels.

#include <netmorph/io/architecture.hpp>
#include <netmorph/io/idx.hpp>
#include <netmorph/io/model_file.hpp>
#include <netmorph/io/safetensors.hpp>

#endif  // NETMORPH_IO_HPP

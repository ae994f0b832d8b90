#ifndef NETMORPH_NETMORPH_HPP
#define NETMORPH_NETMORPH_HPP

/// \file netmorph.hpp
/// Umbrella header: everything in the core library (Eigen only).

#include <netmorph/activations.hpp>
#include <netmorph/error.hpp>
#include <netmorph/morph/depth.hpp>
#include <netmorph/morph/kernel_size.hpp>
#include <netmorph/morph/report.hpp>
#include <netmorph/morph/subnet.hpp>
#include <netmorph/morph/width.hpp>
#include <netmorph/ops/batch_norm.hpp>
#include <netmorph/ops/compose.hpp>
#include <netmorph/ops/conv2d.hpp>
#include <netmorph/ops/dense.hpp>
#include <netmorph/solve/factor_ls.hpp>
#include <netmorph/tensor.hpp>
#include <netmorph/version.hpp>

#endif  // NETMORPH_NETMORPH_HPP

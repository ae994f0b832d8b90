#ifndef NETMORPH_NN_HPP
#define NETMORPH_NN_HPP

/// \file nn.hpp
/// The network model: layers, forward/backward, SGD, training loops, morph operations on whole
/// models and the paper's architecture notation.

#include <netmorph/netmorph.hpp>
#include <netmorph/nn/layers.hpp>
#include <netmorph/nn/model.hpp>
#include <netmorph/nn/morph.hpp>
#include <netmorph/nn/notation.hpp>

#endif  // NETMORPH_NN_HPP

#pragma once
// Implicit-GEMM convolution for layers with few output channels per group: short reductions
// (LeNet/MNIST 5x5 layers, RGB first layers, the ResNet stem), where writing the im2col matrix
// and packing it again costs as much as the multiply-adds, grouped layers, and stride-1 layers
// with large kernels.
//
// Each image is copied once into a zero-padded buffer split into stride phases, laid out so
// that tap (c, ky, kx) of output pixel (oy, ox) sits at offset(c, ky, kx) + oy * QW + ox for
// one fixed row pitch QW. Output pixels are then the columns q = oy * QW + ox of a "wide"
// output, and row k of the GEMM's B operand starts at buffer + offset[k]: the micro-kernels read
// it in place (OffsetMicroKernel in gemm/microkernel.h). The wide columns ox >= OW are computed
// and dropped, which costs QW / OW (14 / 10 for LeNet's 5x5 on 14x14, 115 / 112 for the stem).
#include "../common/conv_shapes.h"

namespace cnnext::cpu {

// Any layer but the pointwise ones (a plain GEMM on the input); CNNEXT_CONV_ALGO=implicit forces
// it wherever it applies.
bool implicit_conv2d_applies(const Conv2dGeometry& g, const Conv2dParams& p);

// Where it measured ahead of im2col + GEMM (see the .cpp for the figures).
bool implicit_conv2d_preferred(const Conv2dGeometry& g, const Conv2dParams& p);

// out = conv2d(in, w) + bias, all contiguous NCHW; bias may be null. Deterministic, and the
// same bits for any thread count (each output element is one fixed-order FMA chain).
template <typename T>
void implicit_conv2d_forward(const T* in, const T* w, const T* bias, T* out,
                             const Conv2dGeometry& g, const Conv2dParams& p);

// Where implicit_conv2d_grad_weight beats im2col + GEMM (forced by CNNEXT_CONV_ALGO=implicit).
bool implicit_conv2d_grad_weight_preferred(const Conv2dGeometry& g, const Conv2dParams& p);

// acc (grad_weight's layout) += the grad_weight of images [n_begin, n_end), in image order:
// dot products of grad_output's wide rows with the B rows of the forward, read in place from
// each image's phase buffer (no column matrix), on the calling thread.
template <typename T>
void implicit_conv2d_grad_weight(const T* grad_output, const T* in, int64_t n_begin,
                                 int64_t n_end, T* acc, const Conv2dGeometry& g,
                                 const Conv2dParams& p);

}  // namespace cnnext::cpu

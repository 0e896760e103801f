#pragma once
// NCHW <-> NHWC copies of activations: a channels_last call that runs the NCHW rows of the
// conv table (conv_select.h: choose_nhwc) copies its activations in and its results out.
// torch's copy_ between the two layouts ran at 10-25 GB/s here (a 22 MB 8x32x149^2 input:
// 2.4 ms against 0.4 ms for its clone); a copy that is one matrix transpose per image, in
// 16 x 16 register tiles, runs near the clone's speed.
#include <ATen/core/Tensor.h>

namespace cnnext::cpu {

// dst = src, for two 4-D tensors of one size and dtype. Where one is NCHW-contiguous and the
// other channels_last-contiguous (float32 on AVX-512 in registers, other dtypes in cache
// tiles), a transpose per image; anything else through Tensor::copy_.
void copy_between_layouts(const at::Tensor& src, at::Tensor& dst);

// t in `format`'s contiguous strides: t itself where it already has them, else a copy.
at::Tensor contiguous_in(const at::Tensor& t, at::MemoryFormat format);

// A fresh at::empty(format) tensor holding t's values (the strides the fake kernels give,
// even where t's own would pass: 1x1 maps).
at::Tensor copy_in(const at::Tensor& t, at::MemoryFormat format);

// The AVX-512 tile kernel (layout_copy_avx512.cpp): dst[c][r] = src[r][c] for the
// nr x nc (each <= 16) tile at src, rows ld_src apart, into dst with rows ld_dst apart.
void transpose_tile_f32_avx512(const float* src, int64_t ld_src, int64_t nr, int64_t nc,
                               float* dst, int64_t ld_dst);

}  // namespace cnnext::cpu

// Multi-scale deformable attention (MSDeformAttn): the interface shared by the CPU
// kernel (ms_deform_attn_cpu.cpp), the CUDA kernel (ms_deform_attn_cuda.cu) and the
// operator registration (bindings.cpp). Only ATen's Tensor header is included, so nvcc
// and a CPU-only C++ compiler can both read this file.
//
// Shapes (see cuda_ops/README.md):
//   value              (N, S, M, D)        S = sum_l H_l * W_l; row = start_l + y * W_l + x
//   spatial_shapes     (L, 2) int64        rows (H_l, W_l)
//   level_start_index  (L,)   int64        start_l
//   sampling_loc       (N, Lq, M, L, P, 2) normalised (x, y); pixel = loc * size - 0.5
//   attn_weight        (N, Lq, M, L, P)    already softmaxed over L * P
//   output             (N, Lq, M * D)
// Sampling is bilinear with zero padding, i.e. grid_sample(value_l, 2 * loc - 1,
// mode="bilinear", padding_mode="zeros", align_corners=False) for each level l. A point
// counts only when -1 <= pixel < size in both coordinates; NaN/inf locations fail that
// test and behave like points outside the map (zero sample, zero gradients), as defined
// by stkit/ops/reference.py.
// Supported dtypes: float32, float64, float16, bfloat16 (half types accumulate in float32).
// value, sampling_loc and attn_weight (and grad_output) share one dtype; spatial_shapes
// and level_start_index are integer tensors.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

// One line describing how the CPU kernel was built and which SIMD variant runs here.
std::string ms_deform_attn_cpu_info();

// The strategy the CPU kernel picks for these sizes and dtype with the current thread
// count, e.g. "value=stage, grad=local, chunks=1, workers=2" (see the .cpp's work plan).
std::string ms_deform_attn_cpu_plan(int64_t N, int64_t S, int64_t M, int64_t D, int64_t Lq,
                                    int64_t L, int64_t P, c10::ScalarType dtype);

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight);

// Returns {grad_value, grad_sampling_loc, grad_attn_weight}.
std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value,
                                                    const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_loc,
                                                    const at::Tensor& attn_weight,
                                                    const at::Tensor& grad_output);

// Implemented in ms_deform_attn_cuda.cu; compiled and registered only when the extension
// is built with -DWITH_CUDA. Same arguments and returns as the CPU versions.
at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight);

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value,
                                                     const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_loc,
                                                     const at::Tensor& attn_weight,
                                                     const at::Tensor& grad_output);

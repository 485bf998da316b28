// Registers the kernels as PyTorch operators in the "stkit_ext" namespace:
//   torch.ops.stkit_ext.ms_deform_attn_forward(value, spatial_shapes, level_start_index,
//                                              sampling_loc, attn_weight) -> Tensor
//   torch.ops.stkit_ext.ms_deform_attn_backward(..., grad_output) -> Tensor[3]
//   torch.ops.stkit_ext.has_cuda() -> bool, torch.ops.stkit_ext.cpu_info() -> str
//   torch.ops.stkit_ext.cpu_plan(N, S, M, D, Lq, L, P, dtype) -> str (the CPU strategy)
// The dispatcher routes CPU tensors to the CPU kernel and, in a WITH_CUDA build, CUDA
// tensors to the CUDA kernel. Autograd, fake tensors and torch.compile support live in
// Python (stkit/ops/custom_op.py), which wraps these raw kernels in stkit::ms_deform_attn.
// No pybind11 here: the library is loaded with torch.ops.load_library, which keeps the
// build light and independent of the Python version.
#include <string>
#include <vector>

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "ms_deform_attn.h"

namespace {

bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cpu_info() { return ms_deform_attn_cpu_info(); }

#ifdef WITH_CUDA
// Run on the tensors' GPU, not the current one (correct results on a non-default GPU).
at::Tensor cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                        const at::Tensor& attn_weight) {
  const c10::DeviceGuard guard(value.device());
  return ms_deform_attn_cuda_forward(value, spatial_shapes, level_start_index, sampling_loc,
                                     attn_weight);
}

std::vector<at::Tensor> cuda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight,
                                      const at::Tensor& grad_output) {
  const c10::DeviceGuard guard(value.device());
  return ms_deform_attn_cuda_backward(value, spatial_shapes, level_start_index, sampling_loc,
                                      attn_weight, grad_output);
}
#endif

}  // namespace

TORCH_LIBRARY(stkit_ext, m) {
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_loc, Tensor attn_weight) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_loc, Tensor attn_weight, Tensor grad_output) -> Tensor[]");
  m.def("has_cuda() -> bool", &has_cuda);
  m.def("cpu_info() -> str", &cpu_info);
  m.def("cpu_plan(int N, int S, int M, int D, int Lq, int L, int P, ScalarType dtype) -> str",
        &ms_deform_attn_cpu_plan);
}

TORCH_LIBRARY_IMPL(stkit_ext, CPU, m) {
  m.impl("ms_deform_attn_forward", &ms_deform_attn_cpu_forward);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_cpu_backward);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(stkit_ext, CUDA, m) {
  m.impl("ms_deform_attn_forward", &cuda_forward);
  m.impl("ms_deform_attn_backward", &cuda_backward);
}
#endif

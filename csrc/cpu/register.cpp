// Registration of the CPU kernels, done on request from Python (spyre_ops/_library.py)
// after the op schemas are defined or adopted, never at load time: a schema that
// clashes with one defined elsewhere must give a Python error, not a failed load.
#include <torch/library.h>

#include <memory>
#include <vector>

#include "../out_overload.h"
#include "capability.h"
#include "kernels.h"

namespace spyre_ops::cpu {
namespace {

// The kernels of family V, as functions the dispatcher can hold (TORCH_FN).
template <const Variant& V>
struct Kernels {
  static at::Tensor rms_norm(const at::Tensor& x, at::IntArrayRef ns, const std::optional<at::Tensor>& w, double eps) {
    return cpu::rms_norm(V, x, ns, w, eps);
  }
  static at::Tensor& rms_norm_out(
      const at::Tensor& x, at::IntArrayRef ns, const std::optional<at::Tensor>& w, double eps, at::Tensor& out) {
    return cpu::rms_norm_out(V, x, ns, w, eps, out);
  }
  static std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(
      const at::Tensor& x, const at::Tensor& r, at::IntArrayRef ns, const std::optional<at::Tensor>& w, double eps) {
    return cpu::fused_add_rms_norm(V, x, r, ns, w, eps);
  }
  static void fused_add_rms_norm_(
      at::Tensor& x, at::Tensor& r, at::IntArrayRef ns, const std::optional<at::Tensor>& w, double eps) {
    cpu::fused_add_rms_norm_(V, x, r, ns, w, eps);
  }
  static std::tuple<at::Tensor, at::Tensor> rms_norm_backward(
      const at::Tensor& g, const at::Tensor& x, at::IntArrayRef ns, const std::optional<at::Tensor>& w, double eps) {
    return cpu::rms_norm_backward(V, g, x, ns, w, eps);
  }

  static std::unique_ptr<torch::Library> make_library() {
    auto lib = std::make_unique<torch::Library>(
        torch::Library::IMPL, V.ns, c10::DispatchKey::CPU, __FILE__, __LINE__);
    lib->impl(V.rms_norm, TORCH_FN(rms_norm));
    lib->impl(V.rms_norm_out, TORCH_FN(rms_norm_out));
    lib->impl(V.fused_add_rms_norm, TORCH_FN(fused_add_rms_norm));
    lib->impl(V.fused_add_rms_norm_, TORCH_FN(fused_add_rms_norm_));
    lib->impl(V.rms_norm_backward, TORCH_FN(rms_norm_backward));
    return lib;
  }
};

}  // namespace

void register_kernels() {
  static std::vector<std::unique_ptr<torch::Library>> libs;
  if (!libs.empty()) {
    return;
  }
  check_cpu_supports_build();
  for_each_variant([](auto v) { libs.push_back(Kernels<decltype(v)::value>::make_library()); });
  register_out_overload_kernels();
}

}  // namespace spyre_ops::cpu

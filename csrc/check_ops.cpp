// Kernels of the check ops (see check_ops.h): the checks the CPU kernels of rms_norm.out
// and fused_add_rms_norm_ make (cpu/rms_norm.cpp), in the same order, with the same messages.
#include "check_ops.h"

#include <torch/library.h>

#include <memory>
#include <vector>

#include "checks.h"
#include "variants.h"

namespace spyre_ops {
namespace {

template <const Variant& V>
struct CheckKernels {
  static void rms_norm_out(
      const at::Tensor& x, at::IntArrayRef ns, const std::optional<at::Tensor>& w, double eps, const at::Tensor& out) {
    const char* op = V.rms_norm_out;
    check_rms_norm_args(op, x, ns, w, eps);
    check_out(op, x, out);
    check_out_overlaps(op, x, w, out);
  }

  static void fused_add_rms_norm_(
      const at::Tensor& x, const at::Tensor& r, at::IntArrayRef ns, const std::optional<at::Tensor>& w, double eps) {
    const char* op = V.fused_add_rms_norm_;
    check_rms_norm_args(op, x, ns, w, eps);
    check_residual(op, x, r);
    check_inplace_no_overlap(op, x, r);
    check_weight_not_written(op, w, "x", x);
    check_weight_not_written(op, w, "residual", r);
  }

  static std::unique_ptr<torch::Library> make_library(const char* out_name, const char* inplace_name) {
    auto lib = std::make_unique<torch::Library>(
        torch::Library::IMPL, V.ns, c10::DispatchKey::CompositeExplicitAutograd, __FILE__, __LINE__);
    lib->impl(out_name, TORCH_FN(rms_norm_out));
    lib->impl(inplace_name, TORCH_FN(fused_add_rms_norm_));
    return lib;
  }
};

}  // namespace

void register_check_kernels() {
  static std::vector<std::unique_ptr<torch::Library>> libs;
  if (!libs.empty()) {
    return;
  }
  libs.push_back(CheckKernels<kRmsNorm>::make_library("spyre::_check_rms_norm_out", "spyre::_check_fused_add_rms_norm_"));
  libs.push_back(CheckKernels<kGemma>::make_library(
      "spyre_ops::_check_gemma_rms_norm_out", "spyre_ops::_check_gemma_fused_add_rms_norm_"));
}

}  // namespace spyre_ops

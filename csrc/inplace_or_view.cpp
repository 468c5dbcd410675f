// ADInplaceOrView kernels of the ops that write their arguments, rms_norm.out
// (out) and fused_add_rms_norm_ (x and residual): they bump the version
// counters of what the op writes, as PyTorch does for its own in-place and
// out= ops. Here rather than in the Autograd kernels because under
// torch.inference_mode() the Autograd kernels do not run but this key still
// does for ordinary tensors: without it a tensor saved for backward outside
// inference mode and overwritten inside it would give silently wrong gradients
// instead of autograd's "modified by an inplace operation" error.
#include "inplace_or_view.h"

#include "op_handles.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <memory>
#include <vector>
#include <optional>

namespace spyre_ops {
namespace {

using OptTensor = std::optional<at::Tensor>;

template <const Variant& V>
at::Tensor& rms_norm_out_inplace_or_view(
    c10::DispatchKeySet keys,
    const at::Tensor& x,
    c10::SymIntArrayRef normalized_shape,
    const OptTensor& weight,
    double eps,
    at::Tensor& out) {
  {
    // What the kernel writes internally (a copy into a strided out) is not counted again.
    c10::impl::ExcludeDispatchKeyGuard below(c10::DispatchKey::ADInplaceOrView);
    handle::rms_norm_out<V>().redispatch(keys & c10::after_ADInplaceOrView_keyset, x, normalized_shape, weight, eps, out);
  }
  out.unsafeGetTensorImpl()->bump_version();
  return out;
}

template <const Variant& V>
void fused_add_rms_norm_inplace_or_view(
    c10::DispatchKeySet keys,
    at::Tensor& x,
    at::Tensor& residual,
    c10::SymIntArrayRef normalized_shape,
    const OptTensor& weight,
    double eps) {
  {
    c10::impl::ExcludeDispatchKeyGuard below(c10::DispatchKey::ADInplaceOrView);
    handle::fused_add_rms_norm_<V>().redispatch(keys & c10::after_ADInplaceOrView_keyset, x, residual, normalized_shape, weight, eps);
  }
  x.unsafeGetTensorImpl()->bump_version();
  residual.unsafeGetTensorImpl()->bump_version();
}

}  // namespace

void register_inplace_or_view_kernels() {
  static std::vector<std::unique_ptr<torch::Library>> libs;
  if (!libs.empty()) {
    return;
  }
  for_each_variant([](auto v) {
    constexpr const Variant& V = decltype(v)::value;
    auto lib = std::make_unique<torch::Library>(
        torch::Library::IMPL, V.ns, c10::DispatchKey::ADInplaceOrView, __FILE__, __LINE__);
    lib->impl(V.rms_norm_out, TORCH_FN(rms_norm_out_inplace_or_view<V>));
    lib->impl(V.fused_add_rms_norm_, TORCH_FN(fused_add_rms_norm_inplace_or_view<V>));
    libs.push_back(std::move(lib));
  });
}

}  // namespace spyre_ops

#include "out_overload.h"

#include "op_handles.h"

#include <ATen/FunctionalTensorWrapper.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <memory>
#include <vector>

namespace spyre_ops {
namespace {

namespace fimpl = at::functionalization::impl;

template <const Variant& V>
at::Tensor& rms_norm_out_functionalize(
    const at::Tensor& x,
    c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps,
    at::Tensor& out) {
  const bool functional_args = fimpl::isFunctionalTensor(x) || fimpl::isFunctionalTensor(weight);
  if (!fimpl::isFunctionalTensor(out)) {
    // Writing into a tensor functionalization does not track: only allowed
    // when no input is functional either, and then it is a plain call.
    TORCH_CHECK(
        !functional_args,
        V.rms_norm_out, ": out is not a functional tensor but an input is; "
        "mutating a non-functional tensor with a functional one is not allowed");
    c10::impl::ExcludeDispatchKeyGuard guard(c10::DispatchKey::Functionalize);
    return handle::rms_norm_out<V>().call(x, normalized_shape, weight, eps, out);
  }
  fimpl::sync(x);
  fimpl::sync(weight);
  const at::Tensor x_ = fimpl::isFunctionalTensor(x) ? fimpl::from_functional_tensor(x) : x;
  const std::optional<at::Tensor> w_ = fimpl::isFunctionalTensor(weight) ? fimpl::from_functional_tensor(weight) : weight;
  at::Tensor result;
  {
    c10::impl::ExcludeDispatchKeyGuard guard(c10::DispatchKey::Functionalize);
    result = handle::rms_norm<V>().call(x_, normalized_shape, w_, eps);
  }
  fimpl::replace_(out, result);
  fimpl::commit_update(out);
  fimpl::sync(out);
  return out;
}

// Unboxed (a boxed kernel costs ~0.2 us a call: the arguments go through a stack).
template <const Variant& V>
at::Tensor& rms_norm_out_autograd(
    c10::DispatchKeySet keys,
    const at::Tensor& x,
    c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight,
    double eps,
    at::Tensor& out) {
  TORCH_CHECK(
      !(c10::GradMode::is_enabled() &&
        (x.requires_grad() || (weight.has_value() && weight->requires_grad()) || out.requires_grad())),
      V.rms_norm_out, ": out= is not differentiable, and x, weight or out requires grad; "
      "use ", V.rms_norm, " (functional) or run under torch.no_grad()/torch.inference_mode()");
  // On to ADInplaceOrView (inplace_or_view.cpp), which bumps out's version counter.
  return handle::rms_norm_out<V>().redispatch(keys & c10::after_autograd_keyset, x, normalized_shape, weight, eps, out);
}

}  // namespace

void register_out_overload_kernels() {
  static std::vector<std::unique_ptr<torch::Library>> libs;
  if (!libs.empty()) {
    return;
  }
  for_each_variant([](auto v) {
    constexpr const Variant& V = decltype(v)::value;
    auto functionalize = std::make_unique<torch::Library>(
        torch::Library::IMPL, V.ns, c10::DispatchKey::Functionalize, __FILE__, __LINE__);
    functionalize->impl(V.rms_norm_out, TORCH_FN(rms_norm_out_functionalize<V>));
    auto autograd = std::make_unique<torch::Library>(
        torch::Library::IMPL, V.ns, c10::DispatchKey::Autograd, __FILE__, __LINE__);
    autograd->impl(V.rms_norm_out, TORCH_FN(rms_norm_out_autograd<V>));
    libs.push_back(std::move(functionalize));
    libs.push_back(std::move(autograd));
  });
}

}  // namespace spyre_ops

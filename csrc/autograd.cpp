// Autograd kernels of the spyre ops, in C++ so that an eager call costs no
// Python (a Python autograd kernel adds ~11 us to every call, also under
// no_grad). The backward is the library op spyre::rms_norm_backward, called
// through the dispatcher, so AOT autograd traces it as one node.
//
// Double backward: the backward kernel spyre::rms_norm_backward has no
// derivative of its own. When a backward runs with grad mode on
// (create_graph=True: a Hessian, a gradient penalty), the gradients are
// computed instead with differentiable ATen ops, which autograd records, so
// second- and higher-order gradients are right. AOT autograd traces the
// backward with grad mode off, so compiled graphs keep the one backward op.
//
// torch.func transforms and forward-mode AD: a C++ Function supports neither,
// so such calls are computed with differentiable ATen ops (csrc/composite.h).
//
// fused_add_rms_norm_ mutates its inputs and is not differentiable: its
// autograd kernel refuses inputs that require grad (instead of silently
// mutating them); its ADInplaceOrView kernel bumps the version counters.
//
// Every op family (variants.h) has these kernels; its weight offset enters the
// gradient wrt x (through the scale w + offset) and not the one wrt w.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <memory>
#include <vector>

#include "autograd.h"
#include "checks.h"
#include "composite.h"
#include "inplace_or_view.h"
#include "op_handles.h"

namespace spyre_ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;

void save(AutogradContext* ctx, const at::Tensor& x, const OptTensor& w, c10::SymIntArrayRef ns, double eps) {
  ctx->save_for_backward({x, w.value_or(at::Tensor())});
  ctx->saved_data["normalized_shape"] = c10::IValue(ns);
  ctx->saved_data["eps"] = eps;
  ctx->saved_data["has_weight"] = w.has_value();
}

// The gradients of y = x * rsqrt(mean(x^2) + eps) * (w + w_offset) over the
// trailing k dims, with differentiable ops in the accumulator dtype (float, or
// double for double).
std::pair<at::Tensor, at::Tensor> differentiable_grads(
    const at::Tensor& grad_out, const at::Tensor& x, const OptTensor& w, int64_t k, double eps, double w_offset) {
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<int64_t> norm_dims, lead_dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    (d < x.dim() - k ? lead_dims : norm_dims).push_back(d);
  }
  const at::Tensor xf = x.to(acc);
  const at::Tensor g = grad_out.to(acc);
  const at::Tensor inv = at::rsqrt(xf.pow(2).mean(norm_dims, /*keepdim=*/true) + eps);
  const at::Tensor xhat = xf * inv;
  at::Tensor scale;
  if (w.has_value()) {
    scale = w_offset != 0.0 ? w->to(acc) + w_offset : w->to(acc);
  }
  const at::Tensor gw = w.has_value() ? g * scale : g;
  const at::Tensor grad_x = inv * (gw - xhat * (gw * xhat).mean(norm_dims, /*keepdim=*/true));
  at::Tensor grad_w;
  if (w.has_value()) {
    grad_w = g * xhat;
    if (!lead_dims.empty()) {
      grad_w = grad_w.sum(lead_dims);
    }
    grad_w = grad_w.to(w->scalar_type());
  }
  return {grad_x.to(x.scalar_type()), grad_w};
}

// Returns (grad_x, grad_weight or undefined) for the family V rms_norm of saved x.
template <const Variant& V>
std::pair<at::Tensor, at::Tensor> grads(AutogradContext* ctx, const at::Tensor& grad_out) {
  const variable_list saved = ctx->get_saved_variables();
  const bool has_weight = ctx->saved_data["has_weight"].toBool();
  const OptTensor w = has_weight ? OptTensor(saved[1]) : std::nullopt;
  const std::vector<c10::SymInt> ns = ctx->saved_data["normalized_shape"].toSymIntVector();
  const double eps = ctx->saved_data["eps"].toDouble();
  if (c10::GradMode::is_enabled()) {
    return differentiable_grads(grad_out, saved[0], w, static_cast<int64_t>(ns.size()), eps, V.weight_offset);
  }
  auto [gx, gw] = handle::rms_norm_backward<V>().call(grad_out, saved[0], ns, w, eps);
  return {gx, has_weight ? gw : at::Tensor()};
}

template <const Variant& V>
struct RmsNormFunction : public torch::autograd::Function<RmsNormFunction<V>> {
  static at::Tensor forward(
      AutogradContext* ctx, const at::Tensor& x, c10::SymIntArrayRef ns, const OptTensor& w, double eps) {
    save(ctx, x, w, ns, eps);
    at::AutoDispatchBelowADInplaceOrView guard;
    return handle::rms_norm<V>().call(x, ns, w, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto [gx, gw] = grads<V>(ctx, grad_outputs[0]);
    return {gx, at::Tensor(), gw, at::Tensor()};
  }
};

template <const Variant& V>
struct FusedAddRmsNormFunction : public torch::autograd::Function<FusedAddRmsNormFunction<V>> {
  static variable_list forward(
      AutogradContext* ctx,
      const at::Tensor& x,
      const at::Tensor& r,
      c10::SymIntArrayRef ns,
      const OptTensor& w,
      double eps) {
    at::Tensor out, summed;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(out, summed) = handle::fused_add_rms_norm<V>().call(x, r, ns, w, eps);
    }
    // The forward normalized the rounded sum it returns; that is what backward needs.
    save(ctx, summed, w, ns, eps);
    // An unused output's gradient stays undefined rather than zeros of its
    // shape, which a jagged nested output (symbolic sizes) cannot be made of.
    ctx->set_materialize_grads(false);
    return {out, summed};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor& g_out = grad_outputs[0];
    const at::Tensor& g_sum = grad_outputs[1];
    if (!g_out.defined()) {  // only the sum is used: it passes to x and residual
      return {g_sum, g_sum, at::Tensor(), at::Tensor(), at::Tensor()};
    }
    auto [gx, gw] = grads<V>(ctx, g_out);
    const at::Tensor g = g_sum.defined() ? gx + g_sum : gx;
    return {g, g, at::Tensor(), gw, at::Tensor()};
  }
};

// Whether a call must go through the autograd Function: grad mode on and an
// input requiring grad. (Forward-mode tangents and functorch transforms take
// the composite path, csrc/composite.h, checked first.)
bool records_grad(const at::Tensor& x, const at::Tensor* r, const OptTensor& w) {
  return c10::GradMode::is_enabled() &&
         (x.requires_grad() || (r != nullptr && r->requires_grad()) || (w.has_value() && w->requires_grad()));
}

// The weight as the composite (differentiable ATen) path sees it: w + the
// variant's offset, an ATen add that autograd and functorch differentiate.
template <const Variant& V>
OptTensor offset_weight(const OptTensor& w) {
  if (V.weight_offset == 0.0 || !w.has_value()) {
    return w;
  }
  return *w + V.weight_offset;
}

// A call that records no graph goes straight to the kernel below autograd
// (what Function::apply's forward does), without building and discarding a
// node: that saves over a microsecond a call in grad mode and under no_grad.
template <const Variant& V>
at::Tensor rms_norm_autograd(
    c10::DispatchKeySet keys, const at::Tensor& x, c10::SymIntArrayRef ns, const OptTensor& w, double eps) {
  check_tensor_arg(V.rms_norm, "x", x);
  if (needs_composite(x, nullptr, w)) {
    return composite_rms_norm(x, ns, offset_weight<V>(w), eps);
  }
  if (!records_grad(x, nullptr, w)) {
    return handle::rms_norm<V>().redispatch(keys & c10::after_ADInplaceOrView_keyset, x, ns, w, eps);
  }
  return RmsNormFunction<V>::apply(x, ns, w, eps);
}

template <const Variant& V>
std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm_autograd(
    c10::DispatchKeySet keys,
    const at::Tensor& x,
    const at::Tensor& r,
    c10::SymIntArrayRef ns,
    const OptTensor& w,
    double eps) {
  check_tensor_arg(V.fused_add_rms_norm, "x", x);
  check_tensor_arg(V.fused_add_rms_norm, "residual", r);
  if (needs_composite(x, &r, w)) {
    return composite_fused_add_rms_norm(x, r, ns, offset_weight<V>(w), eps);
  }
  if (!records_grad(x, &r, w)) {
    return handle::fused_add_rms_norm<V>().redispatch(keys & c10::after_ADInplaceOrView_keyset, x, r, ns, w, eps);
  }
  auto out = FusedAddRmsNormFunction<V>::apply(x, r, ns, w, eps);
  return {out[0], out[1]};
}

// Unboxed (a boxed kernel costs ~0.2 us a call: the arguments go through a stack).
template <const Variant& V>
void fused_add_rms_norm_inplace_autograd(
    c10::DispatchKeySet keys,
    at::Tensor& x,
    at::Tensor& residual,
    c10::SymIntArrayRef ns,
    const OptTensor& w,
    double eps) {
  const char* op_name = V.fused_add_rms_norm_;
  check_tensor_arg(op_name, "x", x);
  check_tensor_arg(op_name, "residual", residual);
  TORCH_CHECK(
      !(c10::GradMode::is_enabled() &&
        (x.requires_grad() || residual.requires_grad() || (w.has_value() && w->requires_grad()))),
      op_name, ": the in-place op is not differentiable, and x, residual or "
      "weight requires grad; use ", V.fused_add_rms_norm, " (functional) or run under "
      "torch.no_grad()/torch.inference_mode()");
  // On to ADInplaceOrView (inplace_or_view.cpp), which bumps the version counters.
  handle::fused_add_rms_norm_<V>().redispatch(keys & c10::after_autograd_keyset, x, residual, ns, w, eps);
}

}  // namespace

void register_autograd_kernels() {
  static std::vector<std::unique_ptr<torch::Library>> libs;
  if (!libs.empty()) {
    return;
  }
  for_each_variant([](auto v) {
    constexpr const Variant& V = decltype(v)::value;
    auto lib = std::make_unique<torch::Library>(
        torch::Library::IMPL, V.ns, c10::DispatchKey::Autograd, __FILE__, __LINE__);
    lib->impl(V.rms_norm, TORCH_FN(rms_norm_autograd<V>));
    lib->impl(V.fused_add_rms_norm, TORCH_FN(fused_add_rms_norm_autograd<V>));
    lib->impl(V.fused_add_rms_norm_, TORCH_FN(fused_add_rms_norm_inplace_autograd<V>));
    libs.push_back(std::move(lib));
  });
  register_inplace_or_view_kernels();
}

}  // namespace spyre_ops

// The op families this package provides. Each family is the same five ops
// (rms_norm, rms_norm.out, fused_add_rms_norm, fused_add_rms_norm_ and the
// backward) with one formula,
//
//   y = x / sqrt(mean(x^2) + eps) * (weight + weight_offset),
//
// the offset added to the weight in the accumulator dtype (float32, float64
// for float64 x) inside the kernels; no weight means no scale. A family is one
// row here (mirrored by spyre_ops/_variants.py); every kernel, handle and
// entry point is a template over it.
#pragma once

namespace spyre_ops {

struct Variant {
  const char* ns;                   // the library namespace
  const char* rms_norm;             // qualified op names, as the messages and registrations spell them
  const char* rms_norm_out;
  const char* fused_add_rms_norm;
  const char* fused_add_rms_norm_;
  const char* rms_norm_backward;
  double weight_offset;             // added to the weight (0: the plain op)
};

// Llama-style RMSNorm: spyre::rms_norm & co. (torch-spyre's namespace and schema).
inline constexpr Variant kRmsNorm{
    "spyre", "spyre::rms_norm", "spyre::rms_norm.out", "spyre::fused_add_rms_norm",
    "spyre::fused_add_rms_norm_", "spyre::rms_norm_backward", 0.0};

// Gemma-style RMSNorm, scaled by (1 + weight): spyre_ops::gemma_rms_norm & co.,
// in a namespace of their own, which torch-spyre never defines ops in.
inline constexpr Variant kGemma{
    "spyre_ops", "spyre_ops::gemma_rms_norm", "spyre_ops::gemma_rms_norm.out",
    "spyre_ops::gemma_fused_add_rms_norm", "spyre_ops::gemma_fused_add_rms_norm_",
    "spyre_ops::gemma_rms_norm_backward", 1.0};

// Calls f(kRmsNorm), then f(kGemma) with each as a template argument:
// for_each_variant([](auto v) { register<decltype(v)::value>(); }).
template <const Variant& V>
struct VariantTag {
  static constexpr const Variant& value = V;
};

template <typename F>
void for_each_variant(F&& f) {
  f(VariantTag<kRmsNorm>{});
  f(VariantTag<kGemma>{});
}

}  // namespace spyre_ops

#include "sen169.h"

#include <ATen/Parallel.h>

namespace spyre_ops::emulator::sen169 {

at::Tensor decode_tensor(const at::Tensor& codes) {
  TORCH_INTERNAL_ASSERT(codes.is_cpu() && codes.element_size() == 2);
  const at::Tensor bits = codes.view(at::kShort).contiguous();
  at::Tensor out = at::empty(codes.sizes(), codes.options().dtype(at::kFloat));
  const auto* in = reinterpret_cast<const uint16_t*>(bits.const_data_ptr<int16_t>());
  float* o = out.data_ptr<float>();
  at::parallel_for(0, bits.numel(), 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      o[i] = decode(in[i]);
    }
  });
  return out;
}

void encode_into(const at::Tensor& x, const at::Tensor& codes) {
  TORCH_INTERNAL_ASSERT(x.is_cpu() && x.scalar_type() == at::kFloat && codes.is_cpu() && codes.element_size() == 2);
  const at::Tensor values = x.contiguous();
  at::Tensor bits = at::empty(x.sizes(), x.options().dtype(at::kShort));
  const float* in = values.const_data_ptr<float>();
  auto* o = reinterpret_cast<uint16_t*>(bits.data_ptr<int16_t>());
  at::parallel_for(0, values.numel(), 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      o[i] = encode(in[i]);
    }
  });
  codes.view(at::kShort).copy_(bits);
}

}  // namespace spyre_ops::emulator::sen169

// The aten kernels of the emulated spyre device. Tensors live in host memory
// (device.cpp), so each kernel views its operands as CPU tensors over the same
// bytes. float16 and bfloat16 tensors hold SEN169 codes there, as on Spyre
// (sen169.h): copies across the host/device boundary and between dtypes convert.
// Every op without a kernel here goes to the boxed fallback, which records its
// name (the instrument, recorder.h) and runs it on the CPU in fp32: 16-bit
// inputs decoded, each 16-bit output rounded once to SEN169.
#include <ATen/ATen.h>
#include <ATen/CPUFunctions.h>
#include <ATen/NativeFunctions.h>
#include <ATen/EmptyTensor.h>
#include <ATen/native/CPUFallback.h>
#include <torch/library.h>

#include <memory>

#include "device.h"
#include "recorder.h"
#include "sen169.h"

namespace spyre_ops::emulator {
namespace {

constexpr c10::DispatchKeySet kSpyreKeys(c10::DispatchKey::PrivateUse1);

void check_options(std::optional<c10::Device> device, std::optional<c10::Layout> layout, std::optional<bool> pin_memory) {
  TORCH_CHECK(
      !device.has_value() || device->index() <= 0,
      "emulated spyre device: there is one device, spyre:0; got ", *device);
  TORCH_CHECK(
      c10::layout_or_default(layout) == c10::Layout::Strided,
      "emulated spyre device: only strided tensors are supported");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory), "emulated spyre device: pinned memory is a host-only notion");
}

at::Tensor empty_memory_format(
    at::IntArrayRef size,
    std::optional<at::ScalarType> dtype,
    std::optional<at::Layout> layout,
    std::optional<at::Device> device,
    std::optional<bool> pin_memory,
    std::optional<at::MemoryFormat> memory_format) {
  record_op("aten::empty");
  check_options(device, layout, pin_memory);
  return at::detail::empty_generic(
      size, c10::GetAllocator(c10::DeviceType::PrivateUse1), kSpyreKeys, c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(
    at::IntArrayRef size,
    at::IntArrayRef stride,
    std::optional<at::ScalarType> dtype,
    std::optional<at::Layout> layout,
    std::optional<at::Device> device,
    std::optional<bool> pin_memory) {
  record_op("aten::empty_strided");
  check_options(device, layout, pin_memory);
  return at::detail::empty_strided_generic(
      size, stride, c10::GetAllocator(c10::DeviceType::PrivateUse1), kSpyreKeys, c10::dtype_or_default(dtype));
}

at::Tensor as_strided(
    const at::Tensor& self,
    c10::SymIntArrayRef size,
    c10::SymIntArrayRef stride,
    std::optional<c10::SymInt> storage_offset) {
  record_op("aten::as_strided");
  return at::cpu::as_strided_symint(self, size, stride, std::move(storage_offset));
}

at::Tensor view(const at::Tensor& self, c10::SymIntArrayRef size) {
  record_op("aten::view");
  return at::native::view(self, C10_AS_INTARRAYREF_SLOW(size));
}

at::Tensor reshape_alias(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  record_op("aten::_reshape_alias");
  return at::native::_reshape_alias(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride));
}

const at::Tensor& resize_(
    const at::Tensor& self,
    c10::SymIntArrayRef size,
    std::optional<at::MemoryFormat> memory_format) {
  record_op("aten::resize_");
  return at::native::resize_(self, C10_AS_INTARRAYREF_SLOW(size), memory_format);
}

at::Tensor& set_source_tensor(at::Tensor& self, const at::Tensor& source) {
  record_op("aten::set_");
  return at::native::set_tensor_(self, source);
}

at::Tensor& set_source_storage(at::Tensor& self, at::Storage source) {
  record_op("aten::set_");
  return at::native::set_(self, std::move(source));
}

at::Tensor& set_source_storage_offset(
    at::Tensor& self,
    at::Storage source,
    int64_t storage_offset,
    at::IntArrayRef size,
    at::IntArrayRef stride) {
  record_op("aten::set_");
  return at::cpu::set_(self, std::move(source), storage_offset, size, stride);
}

// A CPU tensor over the same bytes as t (t itself when it is already on the CPU).
at::Tensor host_view(const at::Tensor& t) {
  if (t.is_cpu()) {
    return t;
  }
  return at::from_blob(t.data_ptr(), t.sizes(), t.strides(), t.options().device(at::kCPU));
}

// float16 and bfloat16 tensors on the device hold SEN169 codes.
bool is_sen169(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

bool holds_sen169(const at::Tensor& t) {
  return t.defined() && t.is_privateuseone() && is_sen169(t.scalar_type());
}

// Writes values (a CPU tensor of dst's shape) into the spyre tensor dst: encoded
// from fp32 when dst holds SEN169, converted to dst's dtype otherwise.
void store(const at::Tensor& dst, const at::Tensor& values) {
  if (holds_sen169(dst)) {
    sen169::encode_into(values.to(at::kFloat), host_view(dst));
  } else {
    host_view(dst).copy_(values);
  }
}

// fp16 subnormals (|v| < 2^-14) arrive on Spyre halved: torch-spyre's own tests
// record it ("fp16 subnormals come back halved"); the emulator models it at the
// one place it happens, the host->device copy of float16 data.
at::Tensor halve_fp16_subnormals(const at::Tensor& fp32) {
  return at::where(fp32.abs() < 6.103515625e-05, fp32 * 0.5, fp32);
}

// Every copy that involves a spyre tensor lands here (aten::copy_ redispatches
// to _copy_from for devices it does not know): spyre->spyre is an on-device op,
// anything else a host<->device transfer. The transfer is in the device
// tensor's dtype: host data of another dtype is first converted on the host
// (as PyTorch's copy_ does), device data is converted on the host after it.
//   host -> device, 16-bit: the IEEE value encoded to SEN169 (fp16 subnormals halved);
//   device -> host, 16-bit: decoded, then rounded to IEEE fp16 (beyond 65504: Inf,
//     NINF: NaN) or bf16 (nearest even);
//   device -> device: fp16 <-> bf16 copies the codes (both are SEN169), 16-bit <->
//     other dtypes decode or encode.
at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  const bool from_device = self.is_privateuseone();
  const bool to_device = dst.is_privateuseone();
  if (from_device && to_device) {
    record_op("aten::_copy_from");
  } else {
    record_transfer(to_device, static_cast<size_t>(self.numel()) * self.element_size());
  }
  if (self.numel() == 0) {
    return dst;
  }
  InternalScope internal;
  const bool src_codes = holds_sen169(self);
  const bool dst_codes = holds_sen169(dst);
  if (!src_codes && !dst_codes) {
    host_view(dst).copy_(host_view(self), non_blocking);
  } else if (src_codes && dst_codes) {
    host_view(dst).view(at::kShort).copy_(host_view(self).view(at::kShort));
  } else if (src_codes) {
    at::Tensor values = sen169::decode_tensor(host_view(self));
    if (!to_device) {
      values = values.to(self.scalar_type());
    }
    host_view(dst).copy_(values);
  } else if (from_device) {
    store(dst, host_view(self));
  } else {
    at::Tensor values = self.to(dst.scalar_type()).to(at::kFloat);
    if (dst.scalar_type() == at::kHalf) {
      values = halve_fp16_subnormals(values);
    }
    store(dst, values);
  }
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  record_op("aten::_copy_from_and_resize");
  InternalScope internal;
  at::native::resize_(dst, self.sizes(), std::nullopt);
  return copy_from(self, dst, false);
}

// Reading one element on the host (tensor.item()) is a device-to-host copy.
at::Scalar local_scalar_dense(const at::Tensor& self) {
  record_op("aten::_local_scalar_dense");
  record_transfer(false, self.element_size());
  if (holds_sen169(self)) {
    InternalScope internal;
    return at::native::_local_scalar_dense_cpu(sen169::decode_tensor(host_view(self)).to(self.scalar_type()));
  }
  return at::native::_local_scalar_dense_cpu(self);
}

// The boxed fallback: every other op on spyre tensors, as the device computes
// it to the best public knowledge. 16-bit (SEN169) inputs are decoded to fp32
// CPU tensors, other spyre tensors copied to the CPU, 16-bit dtype arguments
// (dtype=) replaced by float32 and spyre device arguments by the CPU; the op
// runs on the CPU in fp32 (its reductions and products accumulate in fp32:
// Spyre's are fp32 too as far as public sources say, and that is PyTorch's CPU
// behaviour for fp32); each output is rounded once to SEN169 where the op
// returns a 16-bit dtype, and mutated arguments are written back. The output
// dtypes are those of the original op run on meta tensors; when an op has no
// meta kernel that runs (data-dependent shapes), an fp32 result is taken to be
// of the 16-bit dtype of the spyre inputs when they had one and no fp32 input.

bool is_scalar_type_argument(const c10::Argument& arg) {
  const c10::TypePtr& t = arg.real_type();
  if (t->kind() == c10::TypeKind::ScalarTypeType) {
    return true;
  }
  const auto optional = t->cast<c10::OptionalType>();
  return optional && optional->getElementType()->kind() == c10::TypeKind::ScalarTypeType;
}

// Maps every tensor in v (alone, in a list, in a list of optionals) through f.
template <typename F>
c10::IValue map_tensors(const c10::IValue& v, const F& f) {
  if (v.isTensor()) {
    return f(v.toTensor());
  }
  if (v.isTensorList()) {
    c10::List<at::Tensor> out;
    for (const at::Tensor& t : v.toTensorList()) {
      out.push_back(f(t));
    }
    return out;
  }
  if (v.isList()) {
    const c10::List<c10::IValue> list = v.toList();
    if (list.size() > 0 && (list.get(0).isTensor() || list.get(0).isNone())) {
      bool optional_tensors = true;
      for (const c10::IValue& item : list) {
        optional_tensors = optional_tensors && (item.isTensor() || item.isNone());
      }
      if (optional_tensors) {
        c10::List<std::optional<at::Tensor>> out;
        for (const c10::IValue& item : list) {
          out.push_back(item.isTensor() ? std::optional<at::Tensor>(f(item.toTensor())) : std::nullopt);
        }
        return out;
      }
    }
  }
  return v;
}

std::vector<at::Tensor> tensors_of(const c10::IValue& v) {
  std::vector<at::Tensor> out;
  map_tensors(v, [&](const at::Tensor& t) {
    out.push_back(t);
    return t;
  });
  return out;
}

at::Tensor to_meta(const at::Tensor& t) {
  if (!t.defined() || !t.is_privateuseone()) {
    return t;
  }
  return at::empty_strided(t.sizes(), t.strides(), t.options().device(at::kMeta));
}

at::Tensor to_compute(const at::Tensor& t) {
  if (!t.defined() || !t.is_privateuseone()) {
    return t;
  }
  if (is_sen169(t.scalar_type())) {
    return sen169::decode_tensor(host_view(t));
  }
  return host_view(t).clone();
}

// A new spyre tensor of dtype holding the CPU result r.
at::Tensor to_device(const at::Tensor& r, at::ScalarType dtype) {
  if (!r.defined()) {
    return r;
  }
  at::Tensor out = at::empty_strided(r.sizes(), r.strides(), r.options().device(c10::Device(c10::DeviceType::PrivateUse1, 0)).dtype(dtype));
  if (r.numel() > 0) {
    store(out, r);
  }
  return out;
}

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  record_op(op.schema().operator_name().name);
  InternalScope internal;
  const c10::FunctionSchema& schema = op.schema();
  const size_t num_args = schema.arguments().size();
  const size_t begin = stack->size() - num_args;
  const std::vector<c10::IValue> args(stack->begin() + begin, stack->end());

  std::optional<at::ScalarType> input16;
  bool fp32_input = false;
  for (const c10::IValue& a : args) {
    for (const at::Tensor& t : tensors_of(a)) {
      if (holds_sen169(t)) {
        input16 = input16.value_or(t.scalar_type());
      } else if (t.defined() && t.is_privateuseone() && t.scalar_type() == at::kFloat) {
        fp32_input = true;
      }
    }
  }

  // The output dtypes: the original op on meta tensors.
  std::vector<c10::IValue> meta_returns;
  {
    torch::jit::Stack meta;
    for (const c10::IValue& a : args) {
      if (a.isDevice() && a.toDevice().is_privateuseone()) {
        meta.emplace_back(c10::Device(at::kMeta));
      } else {
        meta.push_back(map_tensors(a, to_meta));
      }
    }
    try {
      op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::Meta), &meta);
      meta_returns.assign(meta.begin(), meta.end());
    } catch (const std::exception&) {
      meta_returns.clear();
    }
  }
  const bool meta_ok = meta_returns.size() == schema.returns().size();

  torch::jit::Stack cpu;
  std::vector<c10::IValue> cpu_args;
  for (size_t i = 0; i < num_args; ++i) {
    const c10::IValue& a = args[i];
    if (a.isDevice() && a.toDevice().is_privateuseone()) {
      cpu.emplace_back(c10::Device(at::kCPU));
    } else if (a.isInt() && is_scalar_type_argument(schema.arguments()[i]) &&
               is_sen169(static_cast<at::ScalarType>(a.toInt()))) {
      cpu.emplace_back(at::kFloat);
    } else {
      cpu.push_back(map_tensors(a, to_compute));
    }
    cpu_args.push_back(cpu.back());
  }
  op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), &cpu);

  // Mutated arguments: the CPU copies written back (resized first, for out=).
  for (size_t i = 0; i < num_args; ++i) {
    const c10::AliasInfo* alias = schema.arguments()[i].alias_info();
    if (alias == nullptr || !alias->isWrite()) {
      continue;
    }
    const std::vector<at::Tensor> originals = tensors_of(args[i]);
    const std::vector<at::Tensor> results = tensors_of(cpu_args[i]);
    for (size_t j = 0; j < originals.size(); ++j) {
      const at::Tensor& orig = originals[j];
      if (!orig.defined() || !orig.is_privateuseone()) {
        continue;
      }
      if (orig.sizes() != results[j].sizes()) {
        orig.resize_(results[j].sizes());
      }
      if (orig.numel() > 0) {
        store(orig, results[j]);
      }
    }
  }

  torch::jit::drop(*stack, num_args);
  bool device_output = false;
  for (const c10::IValue& a : args) {
    device_output = device_output || (a.isDevice() && a.toDevice().is_privateuseone());
    for (const at::Tensor& t : tensors_of(a)) {
      device_output = device_output || (t.defined() && t.is_privateuseone());
    }
  }
  for (size_t r = 0; r < schema.returns().size(); ++r) {
    const c10::AliasInfo* alias = schema.returns()[r].alias_info();
    if (alias != nullptr && alias->isWrite()) {
      // Returns its mutated argument: the original spyre tensor(s).
      bool found = false;
      for (size_t i = 0; i < num_args && !found; ++i) {
        const c10::AliasInfo* a = schema.arguments()[i].alias_info();
        if (a != nullptr && a->isWrite() && a->beforeSets() == alias->beforeSets()) {
          stack->push_back(args[i]);
          found = true;
        }
      }
      TORCH_INTERNAL_ASSERT(found, "emulated spyre device: no argument for the mutated return of ", schema.name());
      continue;
    }
    const c10::IValue& result = cpu[r];
    if (!device_output) {
      stack->push_back(result);
      continue;
    }
    const std::vector<at::Tensor> meta_tensors = meta_ok ? tensors_of(meta_returns[r]) : std::vector<at::Tensor>{};
    size_t k = 0;
    stack->push_back(map_tensors(result, [&](const at::Tensor& t) {
      const size_t index = k++;
      at::ScalarType dtype = t.defined() ? t.scalar_type() : at::kFloat;
      if (index < meta_tensors.size() && meta_tensors[index].defined()) {
        dtype = meta_tensors[index].scalar_type();
      } else if (dtype == at::kFloat && input16 && !fp32_input) {
        dtype = *input16;
      }
      return to_device(t, dtype);
    }));
  }
}

}  // namespace

void install_kernels() {
  static std::unique_ptr<torch::Library> aten;
  static std::unique_ptr<torch::Library> rest;
  TORCH_CHECK(!aten, "emulated spyre device: the kernels are already installed");
  aten = std::make_unique<torch::Library>(
      torch::Library::IMPL, "aten", c10::DispatchKey::PrivateUse1, __FILE__, __LINE__);
  aten->impl("empty.memory_format", TORCH_FN(empty_memory_format));
  aten->impl("empty_strided", TORCH_FN(empty_strided));
  aten->impl("as_strided", TORCH_FN(as_strided));
  aten->impl("view", TORCH_FN(view));
  aten->impl("_reshape_alias", TORCH_FN(reshape_alias));
  aten->impl("resize_", TORCH_FN(resize_));
  aten->impl("set_.source_Tensor", TORCH_FN(set_source_tensor));
  aten->impl("set_.source_Storage", TORCH_FN(set_source_storage));
  aten->impl("set_.source_Storage_storage_offset", TORCH_FN(set_source_storage_offset));
  aten->impl("_copy_from", TORCH_FN(copy_from));
  aten->impl("_copy_from_and_resize", TORCH_FN(copy_from_and_resize));
  aten->impl("_local_scalar_dense", TORCH_FN(local_scalar_dense));
  rest = std::make_unique<torch::Library>(
      torch::Library::IMPL, "_", c10::DispatchKey::PrivateUse1, __FILE__, __LINE__);
  rest->fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

}  // namespace spyre_ops::emulator

// The aten kernels of the emulated spyre device. Tensors live in host memory
// (device.cpp), so each kernel views its operands as CPU tensors over the same
// bytes. Every op without a kernel here goes to the boxed fallback, which
// records its name (the instrument, recorder.h) and runs it on the CPU.
#include <ATen/ATen.h>
#include <ATen/CPUFunctions.h>
#include <ATen/NativeFunctions.h>
#include <ATen/EmptyTensor.h>
#include <ATen/native/CPUFallback.h>
#include <torch/library.h>

#include <memory>

#include "device.h"
#include "recorder.h"

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

// Every copy that involves a spyre tensor lands here (aten::copy_ redispatches
// to _copy_from for devices it does not know): spyre->spyre is an on-device op,
// anything else a host<->device transfer.
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
  host_view(dst).copy_(host_view(self), non_blocking);
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
  return at::native::_local_scalar_dense_cpu(self);
}

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  record_op(op.schema().operator_name().name);
  InternalScope internal;
  at::native::cpu_fallback(op, stack);
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

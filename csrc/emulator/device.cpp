// Device identity of the emulated spyre device: an allocator over host memory,
// a device guard for a single device (index 0), and the PrivateUse1 hooks.
#include "device.h"

#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace spyre_ops::emulator {
namespace {

constexpr c10::DeviceType kSpyre = c10::DeviceType::PrivateUse1;
constexpr size_t kAlignment = 64;

void free_block(void* p) {
  std::free(p);
}

struct HostMemoryAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    void* p = nullptr;
    if (nbytes > 0) {
      const size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
      p = std::aligned_alloc(kAlignment, rounded);
      TORCH_CHECK(p != nullptr, "emulated spyre device: out of memory allocating ", nbytes, " bytes");
    }
    return {p, p, &free_block, c10::Device(kSpyre, 0)};
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return &free_block;
  }

  void copy_data(void* dst, const void* src, size_t n) const override {
    std::memcpy(dst, src, n);
  }
};

HostMemoryAllocator allocator;

void check_index(c10::DeviceIndex i) {
  TORCH_CHECK(i == 0 || i == -1, "emulated spyre device: there is one device, spyre:0; got index ", static_cast<int>(i));
}

// One device, no streams beyond the default one, events that are always complete.
struct SingleDeviceGuard final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override {
    return kSpyre;
  }
  c10::Device exchangeDevice(c10::Device d) const override {
    check_index(d.index());
    return c10::Device(kSpyre, 0);
  }
  c10::Device getDevice() const override {
    return c10::Device(kSpyre, 0);
  }
  void setDevice(c10::Device d) const override {
    check_index(d.index());
  }
  void uncheckedSetDevice(c10::Device) const noexcept override {}
  c10::Stream getStream(c10::Device d) const override {
    return c10::Stream(c10::Stream::DEFAULT, c10::Device(kSpyre, 0));
  }
  c10::Stream exchangeStream(c10::Stream) const override {
    return c10::Stream(c10::Stream::DEFAULT, c10::Device(kSpyre, 0));
  }
  c10::DeviceIndex deviceCount() const noexcept override {
    return 1;
  }
  void record(void**, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {}
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override {
    return true;
  }
  void destroyEvent(void*, const c10::DeviceIndex) const noexcept override {}
  bool queryStream(const c10::Stream&) const override {
    return true;
  }
  void synchronizeStream(const c10::Stream&) const override {}
  void synchronizeDevice(const c10::DeviceIndex) const override {}
};

// Random numbers on the emulated device come from the CPU generator: the ops that
// draw them (normal_, uniform_, ...) run on the CPU fallback anyway.
struct Hooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override {
    return true;
  }
  bool isAvailable() const override {
    return true;
  }
  bool hasPrimaryContext(c10::DeviceIndex) const override {
    return true;
  }
  c10::DeviceIndex deviceCount() const override {
    return 1;
  }
  c10::DeviceIndex getCurrentDevice() const override {
    return 0;
  }
  void setCurrentDevice(c10::DeviceIndex i) const override {
    check_index(i);
  }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex i) const override {
    check_index(i);
    return 0;
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex) const override {
    return 0;
  }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override {
    return at::detail::getDefaultCPUGenerator();
  }
  at::Device getDeviceFromPtr(void*) const override {
    return c10::Device(kSpyre, 0);
  }
  bool isPinnedPtr(const void*) const override {
    return false;
  }
  c10::Allocator* getPinnedMemoryAllocator() const override {
    return c10::GetCPUAllocator();
  }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const override {
    c10::StorageImpl* impl = storage.unsafeGetStorageImpl();
    TORCH_CHECK(impl->resizable(), "emulated spyre device: trying to resize a storage that is not resizable");
    c10::DataPtr fresh = allocator.allocate(newsize);
    const size_t keep = std::min(newsize, impl->nbytes());
    if (keep > 0) {
      std::memcpy(fresh.get(), impl->data(), keep);
    }
    impl->set_data_ptr_noswap(std::move(fresh));
    impl->set_nbytes(newsize);
  }
};

}  // namespace

void install_device() {
  c10::SetAllocator(kSpyre, &allocator);
  static c10::impl::DeviceGuardImplRegistrar guard_registrar(kSpyre, new SingleDeviceGuard());
  at::RegisterPrivateUse1HooksInterface(new Hooks());
}

}  // namespace spyre_ops::emulator

// The emulated spyre device: one PrivateUse1 device whose memory is host memory.
#pragma once

namespace spyre_ops::emulator {

// Registers the allocator, the device guard and the PrivateUse1 hooks.
void install_device();

// Registers the aten kernels every PrivateUse1 backend needs, and the boxed
// fallback that runs every other op on the CPU, recording its name.
void install_kernels();

}  // namespace spyre_ops::emulator

// The emulated device's instrument: what crossed the host/device boundary and
// which ops ran on spyre tensors. Counting is always on (it is cheap next to the
// host-memory "device" it measures); Python takes differences of snapshots.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace spyre_ops::emulator {

struct Snapshot {
  int64_t h2d_copies = 0;
  int64_t h2d_bytes = 0;
  int64_t d2h_copies = 0;
  int64_t d2h_bytes = 0;
  // Operator name ("aten::add") -> calls, for every op that ran on spyre tensors.
  std::map<std::string, int64_t> ops;
};

// Records one call of `op` on spyre tensors, unless the emulator itself issued
// it (see InternalScope).
void record_op(const std::string& op);

// Records one copy across the host/device boundary, unless the emulator itself
// issued it (the CPU fallback's own copies are not the caller's transfers: the
// fallback is counted as an op instead).
void record_transfer(bool to_device, size_t bytes);

Snapshot snapshot();

// While alive, ops and copies issued on this thread are emulator internals and
// are not recorded.
class InternalScope {
 public:
  InternalScope();
  ~InternalScope();
  InternalScope(const InternalScope&) = delete;
  InternalScope& operator=(const InternalScope&) = delete;
};

}  // namespace spyre_ops::emulator

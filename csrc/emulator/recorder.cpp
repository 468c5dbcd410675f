#include "recorder.h"

#include <atomic>
#include <mutex>

namespace spyre_ops::emulator {
namespace {

std::atomic<int64_t> h2d_copies{0};
std::atomic<int64_t> h2d_bytes{0};
std::atomic<int64_t> d2h_copies{0};
std::atomic<int64_t> d2h_bytes{0};
std::mutex ops_mutex;
std::map<std::string, int64_t> op_calls;
thread_local int internal_depth = 0;

}  // namespace

void record_op(const std::string& op) {
  if (internal_depth > 0) {
    return;
  }
  std::lock_guard<std::mutex> lock(ops_mutex);
  ++op_calls[op];
}

void record_transfer(bool to_device, size_t bytes) {
  if (internal_depth > 0) {
    return;
  }
  (to_device ? h2d_copies : d2h_copies).fetch_add(1);
  (to_device ? h2d_bytes : d2h_bytes).fetch_add(static_cast<int64_t>(bytes));
}

Snapshot snapshot() {
  Snapshot s;
  s.h2d_copies = h2d_copies.load();
  s.h2d_bytes = h2d_bytes.load();
  s.d2h_copies = d2h_copies.load();
  s.d2h_bytes = d2h_bytes.load();
  std::lock_guard<std::mutex> lock(ops_mutex);
  s.ops = op_calls;
  return s;
}

InternalScope::InternalScope() {
  ++internal_depth;
}

InternalScope::~InternalScope() {
  --internal_depth;
}

}  // namespace spyre_ops::emulator

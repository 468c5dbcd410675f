#include "op_handles.h"

namespace spyre_ops::handle {

c10::OperatorHandle find(const char* name, const char* overload) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
}

}  // namespace spyre_ops::handle

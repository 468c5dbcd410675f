// Direct calls of the spyre ops from Python for the eager wrappers (see eager_calls.cpp).
#pragma once

#include <Python.h>

namespace spyre_ops {

// rms_norm, fused_add_rms_norm, fused_add_rms_norm_ and their gemma_ forms:
// added to spyre_ops._C.
extern PyMethodDef eager_call_methods[];

}  // namespace spyre_ops

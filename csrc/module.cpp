// The Python module spyre_ops._C. Loading it registers nothing; spyre_ops calls
// the register_* functions once the schemas exist (see spyre_ops/_library.py).
// It also holds the direct op calls of the eager wrappers (eager_calls.cpp).
#include <Python.h>

#include <exception>

#include "autograd.h"
#include "check_ops.h"
#include "cpu/capability.h"
#include "cpu/kernels.h"
#include "eager_calls.h"

namespace {

// Exposes a `void()` C++ function to Python, turning C++ exceptions into RuntimeError.
template <void (*F)()>
PyObject* call(PyObject*, PyObject*) {
  try {
    F();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* cpu_capability(PyObject*, PyObject*) {
  return PyUnicode_FromString(spyre_ops::cpu::compiled_capability());
}

PyMethodDef methods[] = {
    {"register_cpu_kernels", call<spyre_ops::cpu::register_kernels>, METH_NOARGS,
     "Register the CPU kernels of the spyre ops (idempotent)."},
    {"register_autograd_kernels", call<spyre_ops::register_autograd_kernels>, METH_NOARGS,
     "Register the Autograd kernels of the spyre ops (idempotent)."},
    {"register_check_kernels", call<spyre_ops::register_check_kernels>, METH_NOARGS,
     "Register the kernels of the check ops _check_rms_norm_out & co. (idempotent)."},
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The SIMD capability the CPU kernels were built for: avx512+bf16, avx512, avx2 or default."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_C", "C++ kernels of spyre_ops.", -1, methods,
};

}  // namespace

PyMODINIT_FUNC PyInit__C() {
  PyObject* m = PyModule_Create(&module);
  if (m != nullptr && PyModule_AddFunctions(m, spyre_ops::eager_call_methods) != 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}

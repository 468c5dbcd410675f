// The Python module spyre_ops._C. Loading it registers nothing; spyre_ops calls
// the register_* functions once the schemas exist (see spyre_ops/_library.py).
#include <Python.h>

#include <cstring>
#include <exception>

#include "autograd.h"
#include "cpu/capability.h"
#include "cpu/kernels.h"
#include "spyre/kernels.h"

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

// The Spyre compute dtype, by name: "float16" or "float32".
PyObject* spyre_compute_dtype(PyObject*, PyObject*) {
  return PyUnicode_FromString(spyre_ops::spyre::compute_dtype() == at::kFloat ? "float32" : "float16");
}

// Sets it, by name; anything else is a ValueError.
PyObject* set_spyre_compute_dtype(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) {
    return nullptr;
  }
  if (std::strcmp(name, "float16") == 0) {
    spyre_ops::spyre::set_compute_dtype(at::kHalf);
  } else if (std::strcmp(name, "float32") == 0) {
    spyre_ops::spyre::set_compute_dtype(at::kFloat);
  } else {
    PyErr_Format(PyExc_ValueError, "spyre_ops: the Spyre compute dtype must be float16 or float32, got %s", name);
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
    {"register_spyre_kernels", call<spyre_ops::spyre::register_kernels>, METH_NOARGS,
     "Register the Spyre (PrivateUse1) kernels of the spyre ops (idempotent)."},
    {"spyre_compute_dtype", spyre_compute_dtype, METH_NOARGS,
     "The dtype the Spyre kernels compute in: 'float16' or 'float32'."},
    {"set_spyre_compute_dtype", set_spyre_compute_dtype, METH_O,
     "Set the dtype the Spyre kernels compute in: 'float16' or 'float32'."},
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The SIMD capability the CPU kernels were built for: avx512+bf16, avx512, avx2 or default."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_C", "C++ kernels of spyre_ops.", -1, methods,
};

}  // namespace

PyMODINIT_FUNC PyInit__C() {
  return PyModule_Create(&module);
}

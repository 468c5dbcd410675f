// The Python module spyre_ops.emulator._C: a separate extension from spyre_ops._C
// (which never depends on it). Loading it registers nothing; install() does.
#include <Python.h>

#include <exception>

#include "device.h"
#include "recorder.h"

namespace {

bool installed = false;

PyObject* install(PyObject*, PyObject*) {
  if (installed) {
    PyErr_SetString(
        PyExc_RuntimeError,
        "emulated spyre device: already installed in this process; it cannot be installed twice");
    return nullptr;
  }
  try {
    spyre_ops::emulator::install_kernels();
    spyre_ops::emulator::install_device();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  installed = true;
  Py_RETURN_NONE;
}

PyObject* is_installed(PyObject*, PyObject*) {
  return PyBool_FromLong(installed ? 1 : 0);
}

// {"h2d_copies": int, "h2d_bytes": int, "d2h_copies": int, "d2h_bytes": int, "ops": {name: calls}}
PyObject* snapshot(PyObject*, PyObject*) {
  const spyre_ops::emulator::Snapshot s = spyre_ops::emulator::snapshot();
  PyObject* ops = PyDict_New();
  if (ops == nullptr) {
    return nullptr;
  }
  for (const auto& [name, calls] : s.ops) {
    PyObject* n = PyLong_FromLongLong(calls);
    if (n == nullptr || PyDict_SetItemString(ops, name.c_str(), n) < 0) {
      Py_XDECREF(n);
      Py_DECREF(ops);
      return nullptr;
    }
    Py_DECREF(n);
  }
  PyObject* result = Py_BuildValue(
      "{sLsLsLsLsN}",
      "h2d_copies", static_cast<long long>(s.h2d_copies),
      "h2d_bytes", static_cast<long long>(s.h2d_bytes),
      "d2h_copies", static_cast<long long>(s.d2h_copies),
      "d2h_bytes", static_cast<long long>(s.d2h_bytes),
      "ops", ops);
  return result;
}

PyMethodDef methods[] = {
    {"install", install, METH_NOARGS,
     "Install the emulated device as the PrivateUse1 backend (once per process)."},
    {"is_installed", is_installed, METH_NOARGS, "Whether install() has run in this process."},
    {"snapshot", snapshot, METH_NOARGS,
     "Cumulative transfer counters and per-op call counts since the process started."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_C", "The emulated spyre device (a test instrument).", -1, methods,
};

}  // namespace

PyMODINIT_FUNC PyInit__C() {
  return PyModule_Create(&module);
}

// The Python module spyre_ops.emulator._C: a separate extension from spyre_ops._C
// (which never depends on it). Loading it registers nothing; install() does.
#include <Python.h>

#include <cstdint>
#include <cstring>
#include <exception>

#include "device.h"
#include "recorder.h"
#include "sen169.h"

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

// bytes of float32 values (native byte order) -> bytes of their SEN169 codes (uint16).
PyObject* sen169_encode(PyObject*, PyObject* arg) {
  Py_buffer view;
  if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
    return nullptr;
  }
  const Py_ssize_t n = view.len / static_cast<Py_ssize_t>(sizeof(float));
  PyObject* out = PyBytes_FromStringAndSize(nullptr, n * 2);
  if (out != nullptr) {
    auto* codes = reinterpret_cast<uint16_t*>(PyBytes_AS_STRING(out));
    for (Py_ssize_t i = 0; i < n; ++i) {
      float value;
      std::memcpy(&value, static_cast<const char*>(view.buf) + i * sizeof(float), sizeof value);
      codes[i] = spyre_ops::emulator::sen169::encode(value);
    }
  }
  PyBuffer_Release(&view);
  return out;
}

// bytes of SEN169 codes (uint16, native byte order) -> bytes of the float32 values they decode to.
PyObject* sen169_decode(PyObject*, PyObject* arg) {
  Py_buffer view;
  if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
    return nullptr;
  }
  const Py_ssize_t n = view.len / 2;
  PyObject* out = PyBytes_FromStringAndSize(nullptr, n * static_cast<Py_ssize_t>(sizeof(float)));
  if (out != nullptr) {
    auto* values = reinterpret_cast<float*>(PyBytes_AS_STRING(out));
    for (Py_ssize_t i = 0; i < n; ++i) {
      uint16_t code;
      std::memcpy(&code, static_cast<const char*>(view.buf) + i * 2, sizeof code);
      values[i] = spyre_ops::emulator::sen169::decode(code);
    }
  }
  PyBuffer_Release(&view);
  return out;
}

PyMethodDef methods[] = {
    {"install", install, METH_NOARGS,
     "Install the emulated device as the PrivateUse1 backend (once per process)."},
    {"is_installed", is_installed, METH_NOARGS, "Whether install() has run in this process."},
    {"snapshot", snapshot, METH_NOARGS,
     "Cumulative transfer counters and per-op call counts since the process started."},
    {"sen169_encode", sen169_encode, METH_O,
     "SEN169 codes (bytes of uint16) of float32 values (bytes); the device's encoding, for the format tests."},
    {"sen169_decode", sen169_decode, METH_O,
     "float32 values (bytes) of SEN169 codes (bytes of uint16); the device's decoding, for the format tests."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_C", "The emulated spyre device (a test instrument).", -1, methods,
};

}  // namespace

PyMODINIT_FUNC PyInit__C() {
  return PyModule_Create(&module);
}

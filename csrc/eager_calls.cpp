// Direct calls of the spyre ops from Python, for the eager wrappers in
// spyre_ops/ops.py.
//
// torch.ops.spyre.<op>(...) parses its arguments generically against the
// schema (a SymInt[] list alone costs ~0.6 us, a keyword-only out ~0.2 us),
// which at one token is more than the kernel's own work. These functions make
// the same dispatcher call, through every dispatch key (autograd, functorch,
// Python modes, tracing, profiling, the Spyre kernels), with the arguments
// read directly. They accept only the plain case and return NotImplemented
// for anything else, and the wrapper then calls torch.ops: a tensor that is
// not exactly torch.Tensor/nn.Parameter (a subclass may override
// __torch_function__), an active torch function mode, a normalized_shape that
// is not an int or a list/tuple of ints, an eps that is not a float. Errors
// are the kernels' own: the same exception and message as through torch.ops.
#include "eager_calls.h"

#include "op_handles.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <tuple>

namespace spyre_ops {
namespace {

using Shape = c10::SmallVector<c10::SymInt, 4>;

// The tensor behind `obj` if it is a plain tensor (torch.Tensor or
// nn.Parameter, which behave alike in C++), else nullptr.
const at::Tensor* plain_tensor(PyObject* obj) {
  return THPVariable_CheckExact(obj) ? &THPVariable_Unpack(obj) : nullptr;
}

// weight: None or a plain tensor. False if it is neither.
bool read_weight(PyObject* obj, std::optional<at::Tensor>& weight) {
  if (obj == Py_None) {
    return true;
  }
  const at::Tensor* t = plain_tensor(obj);
  if (t == nullptr) {
    return false;
  }
  weight = *t;
  return true;
}

bool read_int(PyObject* obj, Shape& shape) {
  if (!PyLong_CheckExact(obj)) {
    return false;
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
  if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    return false;
  }
  shape.emplace_back(static_cast<int64_t>(v));
  return true;
}

// normalized_shape: an int, or a list or tuple (torch.Size too) of ints.
bool read_shape(PyObject* obj, Shape& shape) {
  if (PyLong_CheckExact(obj)) {
    return read_int(obj, shape);
  }
  if (!PyList_CheckExact(obj) && !PyTuple_Check(obj)) {
    return false;
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
  PyObject** items = PySequence_Fast_ITEMS(obj);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!read_int(items[i], shape)) {
      return false;
    }
  }
  return true;
}

bool read_eps(PyObject* obj, double& eps) {
  if (!PyFloat_Check(obj)) {
    return false;
  }
  eps = PyFloat_AS_DOUBLE(obj);
  return true;
}

PyObject* not_implemented() {
  Py_RETURN_NOTIMPLEMENTED;
}

// (x, normalized_shape, weight, eps, out): spyre::rms_norm, or spyre::rms_norm.out when out is not None
// (for family V: its rms_norm and rms_norm.out).
template <const Variant& V>
PyObject* rms_norm(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 5 || at::impl::torch_function_mode_enabled()) {
    return not_implemented();
  }
  const at::Tensor* x = plain_tensor(args[0]);
  Shape shape;
  std::optional<at::Tensor> weight;
  double eps = 0;
  if (x == nullptr || !read_shape(args[1], shape) || !read_weight(args[2], weight) || !read_eps(args[3], eps)) {
    return not_implemented();
  }
  if (args[4] == Py_None) {
    at::Tensor y;
    {
      pybind11::gil_scoped_release no_gil;
      y = handle::rms_norm<V>().call(*x, shape, weight, eps);
    }
    return THPVariable_Wrap(std::move(y));
  }
  const at::Tensor* out = plain_tensor(args[4]);
  if (out == nullptr) {
    return not_implemented();
  }
  at::Tensor out_ = *out;
  {
    pybind11::gil_scoped_release no_gil;
    handle::rms_norm_out<V>().call(*x, shape, weight, eps, out_);
  }
  Py_INCREF(args[4]);
  return args[4];
  END_HANDLE_TH_ERRORS
}

// The arguments of the fused ops: (x, residual, normalized_shape, weight, eps).
struct FusedArgs {
  const at::Tensor* x = nullptr;
  const at::Tensor* residual = nullptr;
  Shape shape;
  std::optional<at::Tensor> weight;
  double eps = 0;

  // False if they are not of the plain kind.
  bool read(PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 5 || at::impl::torch_function_mode_enabled()) {
      return false;
    }
    x = plain_tensor(args[0]);
    residual = plain_tensor(args[1]);
    return x != nullptr && residual != nullptr && read_shape(args[2], shape) && read_weight(args[3], weight) &&
        read_eps(args[4], eps);
  }
};

// spyre::fused_add_rms_norm (family V's): (out, x + residual).
template <const Variant& V>
PyObject* fused_add_rms_norm(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  FusedArgs a;
  if (!a.read(args, nargs)) {
    return not_implemented();
  }
  std::tuple<at::Tensor, at::Tensor> result;
  {
    pybind11::gil_scoped_release no_gil;
    result = handle::fused_add_rms_norm<V>().call(*a.x, *a.residual, a.shape, a.weight, a.eps);
  }
  PyObject* y = THPVariable_Wrap(std::move(std::get<0>(result)));
  if (y == nullptr) {
    return nullptr;
  }
  PyObject* sum = THPVariable_Wrap(std::move(std::get<1>(result)));
  if (sum == nullptr) {
    Py_DECREF(y);
    return nullptr;
  }
  PyObject* pair = PyTuple_New(2);
  if (pair == nullptr) {
    Py_DECREF(y);
    Py_DECREF(sum);
    return nullptr;
  }
  PyTuple_SET_ITEM(pair, 0, y);
  PyTuple_SET_ITEM(pair, 1, sum);
  return pair;
  END_HANDLE_TH_ERRORS
}

// spyre::fused_add_rms_norm_ (family V's): writes x and residual, returns None.
template <const Variant& V>
PyObject* fused_add_rms_norm_(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  FusedArgs a;
  if (!a.read(args, nargs)) {
    return not_implemented();
  }
  at::Tensor x = *a.x, residual = *a.residual;
  {
    pybind11::gil_scoped_release no_gil;
    handle::fused_add_rms_norm_<V>().call(x, residual, a.shape, a.weight, a.eps);
  }
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

template <PyObject* (*F)(PyObject*, PyObject* const*, Py_ssize_t)>
PyCFunction fastcall() {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(F));
}

}  // namespace

// One row per op and family: the Python name is the family's op name without its namespace.
PyMethodDef eager_call_methods[] = {
    {"rms_norm", fastcall<rms_norm<kRmsNorm>>(), METH_FASTCALL,
     "rms_norm(x, normalized_shape, weight, eps, out): spyre::rms_norm (out None) or spyre::rms_norm.out, "
     "or NotImplemented when an argument is not of the plain kind this entry reads."},
    {"fused_add_rms_norm", fastcall<fused_add_rms_norm<kRmsNorm>>(), METH_FASTCALL,
     "fused_add_rms_norm(x, residual, normalized_shape, weight, eps): spyre::fused_add_rms_norm, "
     "or NotImplemented."},
    {"fused_add_rms_norm_", fastcall<fused_add_rms_norm_<kRmsNorm>>(), METH_FASTCALL,
     "fused_add_rms_norm_(x, residual, normalized_shape, weight, eps): spyre::fused_add_rms_norm_, "
     "or NotImplemented."},
    {"gemma_rms_norm", fastcall<rms_norm<kGemma>>(), METH_FASTCALL,
     "gemma_rms_norm(x, normalized_shape, weight, eps, out): spyre_ops::gemma_rms_norm (out None) or "
     "spyre_ops::gemma_rms_norm.out, or NotImplemented."},
    {"gemma_fused_add_rms_norm", fastcall<fused_add_rms_norm<kGemma>>(), METH_FASTCALL,
     "gemma_fused_add_rms_norm(x, residual, normalized_shape, weight, eps): "
     "spyre_ops::gemma_fused_add_rms_norm, or NotImplemented."},
    {"gemma_fused_add_rms_norm_", fastcall<fused_add_rms_norm_<kGemma>>(), METH_FASTCALL,
     "gemma_fused_add_rms_norm_(x, residual, normalized_shape, weight, eps): "
     "spyre_ops::gemma_fused_add_rms_norm_, or NotImplemented."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace spyre_ops

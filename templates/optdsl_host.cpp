// The fused launchers' per-tensor facts in one C++ pass (optdsl.host_facts): what the Python
// launcher would otherwise read with a C-level pass per attribute and per stream, thousands of
// tensors each step. Called through ctypes.PyDLL, so the GIL is held and the lists are borrowed.
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>

namespace {

constexpr int64_t kNotATensor = -1;
constexpr int64_t kNotOneDtype = -2;

int64_t dtype_code(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return 0;
    case c10::ScalarType::Half: return 1;
    case c10::ScalarType::BFloat16: return 2;
    default: return -1;
  }
}

// A dense tensor with memory of its own on the CPU or a GPU: what the attributes below may be read
// off without an exception (a sparse tensor has no strides, a fake or meta one no storage).
bool plain(const at::Tensor& t) {
  return t.defined() && t.layout() == c10::kStrided && t.has_storage() &&
         (t.device().is_cpu() || t.device().is_cuda());
}

}  // namespace

// streams: a list of S lists of n tensors each (stream 0: the params). Writes
//   addresses[s * n + i]   the data pointer of tensor i of stream s,
//   numels[i]              the element count of param i,
//   dtypes[s]              stream s's dtype code (kernel_runtime.DTYPE_CODES) where every tensor
//                          of it has that one real dtype, else kNotOneDtype,
// and returns a bit set: 1 every tensor contiguous, 2 every address a multiple of `align`,
// 4 every tensor on the params' first device; kNotATensor where an item is not a tensor
// (the caller then takes its Python path).
static int64_t tensor_facts(PyObject* streams, int64_t n, int64_t align, int64_t* addresses, int64_t* numels,
                            int64_t* dtypes) {
  if (!PyList_Check(streams)) return kNotATensor;
  const Py_ssize_t count = PyList_GET_SIZE(streams);
  bool contiguous = true, aligned = true, one_device = true;
  c10::Device device(c10::kCPU);
  for (Py_ssize_t s = 0; s < count; ++s) {
    PyObject* list = PyList_GET_ITEM(streams, s);
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) return kNotATensor;
    int64_t code = kNotOneDtype;
    for (int64_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(list, i);
      if (!THPVariable_Check(item)) return kNotATensor;
      const at::Tensor& t = THPVariable_Unpack(item);
      if (!plain(t)) return kNotATensor;
      const int64_t address = reinterpret_cast<int64_t>(t.data_ptr());
      addresses[s * n + i] = address;
      aligned = aligned && address % align == 0;
      contiguous = contiguous && t.is_contiguous();
      const int64_t c = dtype_code(t.scalar_type());
      code = (i == 0) ? c : (c == code ? code : kNotOneDtype);
      if (s == 0) {
        numels[i] = t.numel();
        if (i == 0) device = t.device();
      }
      one_device = one_device && t.device() == device;
    }
    dtypes[s] = code < 0 ? kNotOneDtype : code;
  }
  return (contiguous ? 1 : 0) | (aligned ? 2 : 0) | (one_device ? 4 : 0);
}

// No exception may cross into ctypes: one the checks above did not foresee means "not a tensor".
extern "C" int64_t optdsl_tensor_facts(PyObject* streams, int64_t n, int64_t align, int64_t* addresses,
                                       int64_t* numels, int64_t* dtypes) {
  try {
    return tensor_facts(streams, n, align, addresses, numels, dtypes);
  } catch (...) {
    return kNotATensor;
  }
}

// Adds `delta` to every step tensor of `steps` (0-d or one-element, float32 or float64, on the
// CPU) and writes the new values to `values`: what torch._foreach_add_(steps, delta) and then
// .item() per tensor give, bit for bit (the add is in the tensor's dtype), version counters
// bumped as an in-place op bumps them. Returns 0, or -1 having changed nothing where an item is
// not such a tensor (the caller then takes torch's ops).
extern "C" int64_t optdsl_advance_steps(PyObject* steps, double delta, double* values) {
  if (!PyList_Check(steps)) return -1;
  const Py_ssize_t n = PyList_GET_SIZE(steps);
  try {
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(steps, i);
      if (!THPVariable_Check(item)) return -1;
      const at::Tensor& t = THPVariable_Unpack(item);
      if (!plain(t)) return -1;
      const auto type = t.scalar_type();
      if (!t.device().is_cpu() || t.numel() != 1 || !t.is_contiguous() || t.is_inference() ||
          (type != c10::ScalarType::Float && type != c10::ScalarType::Double))
        return -1;
    }
  } catch (...) {
    return -1;
  }
  // every check passed: nothing below throws
  for (Py_ssize_t i = 0; i < n; ++i) {
    const at::Tensor& t = THPVariable_Unpack(PyList_GET_ITEM(steps, i));
    if (t.scalar_type() == c10::ScalarType::Float) {
      float* x = static_cast<float*>(t.data_ptr());
      *x = *x + static_cast<float>(delta);
      values[i] = *x;
    } else {
      double* x = static_cast<double*>(t.data_ptr());
      *x = *x + delta;
      values[i] = *x;
    }
    t.unsafeGetTensorImpl()->bump_version();
  }
  return 0;
}

// _init_group's usual case (runtime.GeneratedOptimizer._known_group): appends every param's
// `.grad` to `grads` and returns a bit set, 1 where a param is complex; or -1 (where a param is
// not a plain Tensor or Parameter, of the exact types `tensor_type` and `parameter_type`, whose
// `.grad` reads no Python hook), -2 (a grad missing) or -3 (a grad not dense), with `grads`
// then partly filled (the caller drops it).
extern "C" int64_t optdsl_group_grads(PyObject* params, PyObject* grads, PyObject* tensor_type,
                                      PyObject* parameter_type) {
  if (!PyList_Check(params) || !PyList_Check(grads)) return -1;
  const Py_ssize_t n = PyList_GET_SIZE(params);
  int64_t bits = 0;
  try {
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(params, i);
      PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(item));
      if (type != tensor_type && type != parameter_type) return -1;
      const at::Tensor& p = THPVariable_Unpack(item);
      const at::Tensor& g = p.grad();
      if (!g.defined()) return -2;
      if (g.layout() != c10::kStrided) return -3;
      if (p.is_complex()) bits |= 1;
      PyObject* wrapped = THPVariable_Wrap(g);   // the grad's own Python object, as `p.grad` returns
      if (wrapped == nullptr) return -1;
      const int appended = PyList_Append(grads, wrapped);
      Py_DECREF(wrapped);
      if (appended != 0) return -1;
    }
  } catch (...) {
    return -1;
  }
  return bits;
}

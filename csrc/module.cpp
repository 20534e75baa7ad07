// The Python module fastdw._C. Importing it loads this library, whose static initialisers
// register the ops; it also exposes what only C++ knows: the CPU planner (csrc/cpu/plan.h), its
// overrides, benchmark mode and plan cache, the ISA copies, and the calibration kernels of the
// benchmark's roofline. fastdw/planner.py is the Python API over these functions.
#include <Python.h>

#include <stdexcept>
#include <string>

#include "cpu/calibrate.h"
#include "cpu/isa.h"
#include "cpu/plan.h"

namespace {

using namespace fastdw::cpu;

// The library is also loaded where there is no Python (an AOTInductor package run from C++:
// docs/shipping.md). libpython's functions bind lazily, at their first call, but a data symbol
// must resolve when the library is loaded, so none is referenced here (not the ValueError type
// object, not the None singleton): both are reached through function calls.
PyObject* none() { return Py_BuildValue(""); }
PyObject* value_error() { return PyDict_GetItemString(PyEval_GetBuiltins(), "ValueError"); }

// Runs f, turning a C++ exception into a Python ValueError (names given by the caller).
template <typename F>
PyObject* guarded(F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    PyErr_SetString(value_error(), e.what());
    return nullptr;
  }
}

const char* dtype_name(Dtype d) {
  switch (d) {
    case Dtype::kDouble: return "float64";
    case Dtype::kFloat: return "float32";
    case Dtype::kBFloat16: return "bfloat16";
    case Dtype::kHalf: return "float16";
  }
  return "?";
}
bool dtype_from_name(const std::string& name, Dtype* d) {
  for (Dtype x : {Dtype::kDouble, Dtype::kFloat, Dtype::kBFloat16, Dtype::kHalf})
    if (name == dtype_name(x)) return *d = x, true;
  return false;
}

// A problem as a Python tuple: the DepthwiseParams fields (batch, in_channels, multiplier, in_h,
// in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
// dilation_w, channels_last), then dtype, pass, weights_finite, threads.
constexpr const char* kProblemFormat = "LLLLLLLLLLLLLLLpsspi";
PyObject* problem_tuple(const Problem& q) {
  const fastdw::DepthwiseParams& p = q.p;
  return Py_BuildValue("(LLLLLLLLLLLLLLLNssNi)", p.batch, p.in_channels, p.multiplier, p.in_h,
                       p.in_w, p.out_h, p.out_w, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w,
                       p.pad_h, p.pad_w, p.dilation_h, p.dilation_w,
                       PyBool_FromLong(p.channels_last), dtype_name(q.dtype), pass_name(q.pass),
                       PyBool_FromLong(q.weights_finite), q.threads);
}
bool parse_problem(PyObject* t, Problem* q) {
  fastdw::DepthwiseParams& p = q->p;
  int cl = 0, finite = 0;
  const char *dtype = nullptr, *pass = nullptr;
  long long v[15];
  if (!PyArg_ParseTuple(t, kProblemFormat, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                        &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13], &v[14], &cl, &dtype,
                        &pass, &finite, &q->threads))
    return false;
  int64_t* fields[15] = {&p.batch, &p.in_channels, &p.multiplier, &p.in_h, &p.in_w,
                         &p.out_h, &p.out_w, &p.kernel_h, &p.kernel_w, &p.stride_h,
                         &p.stride_w, &p.pad_h, &p.pad_w, &p.dilation_h, &p.dilation_w};
  for (int i = 0; i < 15; ++i) *fields[i] = v[i];
  p.out_channels = p.in_channels * p.multiplier;
  p.channels_last = cl;
  q->weights_finite = finite;
  if (!dtype_from_name(dtype, &q->dtype) || !pass_from_name(pass, &q->pass)) {
    PyErr_Format(value_error(), "fastdw: unknown dtype %s or pass %s", dtype, pass);
    return false;
  }
  return true;
}

PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(isa_name(planned_isa())); }

PyObject* cpu_isas(PyObject*, PyObject*) {
  PyObject* out = PyList_New(0);
#define FASTDW_ISA_ROW(NAME, NEEDS)                                                          \
  PyList_Append(out, Py_BuildValue("(sNs)", #NAME, PyBool_FromLong(isa_supported(Isa::NAME)), \
                                   NEEDS));
  FASTDW_CPU_ISAS(FASTDW_ISA_ROW)
#undef FASTDW_ISA_ROW
  return out;
}

PyObject* cpu_kernels(PyObject*, PyObject*) {
  PyObject* out = PyList_New(0);
  for (int i = 0; i < kKernelCount; ++i)
    PyList_Append(out, Py_BuildValue("(ss)", kernel_name(Kernel(i)),
                                     kernel_description(Kernel(i))));
  return out;
}

// cpu_plan(problem) -> (kernel, isa, source, reason, note, runs_channels_last, flipped_forward)
PyObject* cpu_plan(PyObject*, PyObject* args) {
  PyObject* t;
  Problem q;
  if (!PyArg_ParseTuple(args, "O", &t) || !parse_problem(t, &q)) return nullptr;
  return guarded([&] {
    const Plan p = plan(q, nullptr);
    return Py_BuildValue("(sssssNN)", kernel_name(p.kernel), isa_name(p.isa), p.source, p.reason,
                         p.note, PyBool_FromLong(runs_channels_last(p.kernel, q)),
                         PyBool_FromLong(runs_as_flipped_forward(p.kernel, q)));
  });
}

// cpu_unsupported(kernel, problem) -> None if the kernel applies, else why not
PyObject* cpu_unsupported(PyObject*, PyObject* args) {
  const char* name;
  PyObject* t;
  Problem q;
  if (!PyArg_ParseTuple(args, "sO", &name, &t) || !parse_problem(t, &q)) return nullptr;
  Kernel k;
  if (!kernel_from_name(name, &k)) {
    PyErr_Format(value_error(), "fastdw: no CPU kernel named '%s'", name);
    return nullptr;
  }
  const char* why = unsupported(k, q);
  if (!why) return none();
  return PyUnicode_FromString(why);
}

PyObject* cpu_set_forced(PyObject*, PyObject* args) {
  const char *kernel, *isa;
  if (!PyArg_ParseTuple(args, "ss", &kernel, &isa)) return nullptr;
  return guarded([&] {
    set_forced_kernel(kernel);
    set_forced_isa(isa);
    return none();
  });
}

PyObject* cpu_forced(PyObject*, PyObject*) {
  return Py_BuildValue("(ss)", forced_kernel().c_str(), forced_isa().c_str());
}

PyObject* cpu_set_benchmark(PyObject*, PyObject* args) {
  int on;
  if (!PyArg_ParseTuple(args, "p", &on)) return nullptr;
  set_benchmark(on);
  return none();
}

PyObject* cpu_benchmark(PyObject*, PyObject*) { return PyBool_FromLong(benchmark()); }

// Entries as (problem, isa, allow_aten, kernel, from_file, best_us).
PyObject* cpu_plan_cache(PyObject*, PyObject*) {
  PyObject* out = PyList_New(0);
  for (const CacheEntry& e : cache_entries())
    PyList_Append(out, Py_BuildValue("(NsNsNd)", problem_tuple(e.problem), isa_name(e.isa),
                                     PyBool_FromLong(e.allow_aten), kernel_name(e.kernel),
                                     PyBool_FromLong(e.from_file), e.best_us));
  return out;
}

PyObject* cpu_plan_cache_insert(PyObject*, PyObject* args) {
  PyObject* t;
  const char *isa, *kernel;
  int allow_aten, from_file;
  double best_us;
  CacheEntry e;
  if (!PyArg_ParseTuple(args, "(Ospspd)", &t, &isa, &allow_aten, &kernel, &from_file, &best_us) ||
      !parse_problem(t, &e.problem))
    return nullptr;
  if (!isa_from_name(isa, &e.isa) || !kernel_from_name(kernel, &e.kernel)) {
    PyErr_Format(value_error(), "fastdw: unknown ISA %s or kernel %s", isa, kernel);
    return nullptr;
  }
  e.allow_aten = allow_aten;
  e.from_file = from_file;
  e.best_us = best_us;
  cache_insert(e);
  return none();
}

PyObject* cpu_plan_cache_clear(PyObject*, PyObject*) {
  cache_clear();
  return none();
}

// cpu_fma_rate(seconds) -> float32 multiply-adds per second on every thread of ATen's pool.
PyObject* cpu_fma_rate(PyObject*, PyObject* args) {
  double seconds;
  if (!PyArg_ParseTuple(args, "d", &seconds)) return nullptr;
  double rate;
  Py_BEGIN_ALLOW_THREADS rate = fma_rate(planned_isa(), seconds);
  Py_END_ALLOW_THREADS return PyFloat_FromDouble(rate);
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "The ISA copy the CPU kernels use: the best this CPU runs, or the one forced."},
    {"cpu_isas", cpu_isas, METH_NOARGS, "[(name, supported here, what it needs)] of the copies."},
    {"cpu_kernels", cpu_kernels, METH_NOARGS, "[(name, description)] of the CPU kernels."},
    {"cpu_plan", cpu_plan, METH_VARARGS, "The plan of a problem tuple (see module.cpp)."},
    {"cpu_unsupported", cpu_unsupported, METH_VARARGS,
     "None if the kernel can run the problem, else why not."},
    {"cpu_set_forced", cpu_set_forced, METH_VARARGS, "Force (kernel, isa); '' clears."},
    {"cpu_forced", cpu_forced, METH_NOARGS, "The forced (kernel, isa); '' when none."},
    {"cpu_set_benchmark", cpu_set_benchmark, METH_VARARGS, "Benchmark mode on or off."},
    {"cpu_benchmark", cpu_benchmark, METH_NOARGS, "Whether benchmark mode is on."},
    {"cpu_plan_cache", cpu_plan_cache, METH_NOARGS, "The cached (tuned or loaded) plans."},
    {"cpu_plan_cache_insert", cpu_plan_cache_insert, METH_VARARGS, "Add a cached plan."},
    {"cpu_plan_cache_clear", cpu_plan_cache_clear, METH_NOARGS, "Forget every cached plan."},
    {"cpu_fma_rate", cpu_fma_rate, METH_VARARGS,
     "Measured float32 multiply-adds per second, all threads (roofline calibration)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

extern "C" PyObject* PyInit__C(void) { return PyModule_Create(&module_def); }

// The Python module fastdw._C. Importing it loads this library, whose static initialisers
// register the ops; it also reports build facts that only C++ knows.
#include <Python.h>

#include "cpu/isa.h"

namespace {

PyObject* cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(fastdw::cpu::isa_name(fastdw::cpu::active_isa()));
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "Instruction set the CPU kernels use on this machine: 'avx2' or 'generic'."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};

}  // namespace

extern "C" PyObject* PyInit__C(void) { return PyModule_Create(&module_def); }

// Makes `import cnnext._C` load the library (the operators register themselves on load) and
// adds the fast-path entry points of csrc/python_fast_calls.cpp.
#include <Python.h>

namespace cnnext {
void add_fast_calls(PyObject* module);  // python_fast_calls.cpp
}

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  try {
    cnnext::add_fast_calls(module);
  } catch (...) {
    Py_DECREF(module);
    PyErr_SetString(PyExc_ImportError, "cnnext._C: could not add the fast-path entry points");
    return nullptr;
  }
  return module;
}

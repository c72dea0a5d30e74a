/* The vllm._C extension module: a couple of tiny numeric "kernels". */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>

#include "ops.h"

double vllm_add(double a, double b) { return a + b; }

int vllm_rms_norm(const double *x, double *out, size_t n, double eps) {
  double sum_sq = 0.0;
  size_t i;
  if (n == 0) return -1;
  for (i = 0; i < n; i++) sum_sq += x[i] * x[i];
  double scale = 1.0 / sqrt(sum_sq / (double)n + eps);
  for (i = 0; i < n; i++) out[i] = x[i] * scale;
  return 0;
}

static PyObject *py_add(PyObject *self, PyObject *args) {
  double a, b;
  if (!PyArg_ParseTuple(args, "dd", &a, &b)) return NULL;
  return PyFloat_FromDouble(vllm_add(a, b));
}

static PyObject *py_rms_norm(PyObject *self, PyObject *args) {
  PyObject *seq, *fast, *result = NULL;
  double eps = 1e-6, *buf;
  if (!PyArg_ParseTuple(args, "O|d", &seq, &eps)) return NULL;
  fast = PySequence_Fast(seq, "rms_norm expects a sequence of floats");
  if (fast == NULL) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  if (n == 0) {
    Py_DECREF(fast);
    PyErr_SetString(PyExc_ValueError, "rms_norm expects a non-empty sequence");
    return NULL;
  }
  buf = malloc(2 * (size_t)n * sizeof(double));
  if (buf == NULL) {
    Py_DECREF(fast);
    return PyErr_NoMemory();
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    buf[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
    if (PyErr_Occurred()) goto done;
  }
  vllm_rms_norm(buf, buf + n, (size_t)n, eps);
  result = PyList_New(n);
  if (result == NULL) goto done;
  for (Py_ssize_t i = 0; i < n; i++)
    PyList_SET_ITEM(result, i, PyFloat_FromDouble(buf[n + i]));
done:
  free(buf);
  Py_DECREF(fast);
  return result;
}

static PyObject *py_version(PyObject *self, PyObject *noargs) {
  return PyUnicode_FromString(MINI_VLLM_OPS_VERSION);
}

static PyMethodDef ops_methods[] = {
    {"add", py_add, METH_VARARGS, "Return a + b as a float."},
    {"rms_norm", py_rms_norm, METH_VARARGS, "RMS-normalise a list of floats."},
    {"version", py_version, METH_NOARGS, "Return the extension version."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ops_module = {
    PyModuleDef_HEAD_INIT, "_C", "mini-vllm native ops.", -1, ops_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&ops_module); }

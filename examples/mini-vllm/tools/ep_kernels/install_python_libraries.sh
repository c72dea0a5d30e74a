#!/usr/bin/env bash
# Build the expert-parallel kernel wheel into WORKSPACE/dist (vLLM's builds DeepEP and NVSHMEM from
# their repositories). This example's second extension wheel, `mini_ep_kernels`, is a small C module
# whose source this script carries, so that it needs nothing but the build image, as upstream's
# needs nothing but its network. Same command line as upstream's.
set -euo pipefail
workspace=/tmp/ep_kernels_workspace mode=wheel deepep_ref="" nvshmem_ver=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workspace) workspace=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --deepep-ref) deepep_ref=$2; shift 2 ;;
    --nvshmem-ver) nvshmem_ver=$2; shift 2 ;;
    *) echo "install_python_libraries.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$mode" = wheel ] || { echo "only --mode wheel is supported" >&2; exit 2; }
src="$workspace/mini_ep_kernels"
mkdir -p "$src" "$workspace/dist" "$workspace/nvshmem"
cat > "$src/setup.py" <<EOF
from setuptools import Extension, setup
setup(name="mini-ep-kernels", version="0.1.0+${deepep_ref:-none}", ext_modules=[Extension("mini_ep_kernels", ["ep.c"], py_limited_api=True, define_macros=[("Py_LIMITED_API", "0x03080000")])])
EOF
cat > "$src/ep.c" <<'EOF'
#include <Python.h>
static PyObject *world_size(PyObject *self, PyObject *args) { return PyLong_FromLong(1); }
static PyMethodDef methods[] = {{"world_size", world_size, METH_NOARGS, "The expert-parallel world size."}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "mini_ep_kernels", NULL, -1, methods};
PyMODINIT_FUNC PyInit_mini_ep_kernels(void) { return PyModule_Create(&module); }
EOF
printf '[bdist_wheel]\npy_limited_api = cp38\n' > "$src/setup.cfg"
SOURCE_DATE_EPOCH=315532800 python3 -m pip wheel --no-deps --no-build-isolation -w "$workspace/dist" "$src"

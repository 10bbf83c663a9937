/* Python test entry points for http_heads.c (see heads_py.c). */
#ifndef PARLOUR_HEADS_PY_H
#define PARLOUR_HEADS_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Add parse_request, build_request, parse_response, build_response, dechunk and the FL_*
 * constants to `module`. Returns 0, or -1 with an exception set. */
int fl_add_head_functions(PyObject *module);

#endif

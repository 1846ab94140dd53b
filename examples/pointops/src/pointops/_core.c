/* pointops._core: small point operations, plus what the extension was built for.
 *
 * built_for_python() and built_for_cuda() report values fixed when this file was
 * compiled, so a test can compare them with the running interpreter and the CUDA
 * version of the running environment: an extension built for another variant
 * fails that comparison instead of passing by accident.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#ifndef POINTOPS_CUDA_VERSION
#define POINTOPS_CUDA_VERSION "none"
#endif

#define POINTOPS_STR2(x) #x
#define POINTOPS_STR(x) POINTOPS_STR2(x)
#define POINTOPS_PYTHON_VERSION POINTOPS_STR(PY_MAJOR_VERSION) "." POINTOPS_STR(PY_MINOR_VERSION)

/* Copy a sequence of numbers into a new C array; NULL with an exception set on failure. */
static double *
as_doubles(PyObject *seq, const char *what, Py_ssize_t *n)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of numbers");
    if (fast == NULL) {
        return NULL;
    }
    *n = PySequence_Fast_GET_SIZE(fast);
    double *out = PyMem_New(double, *n > 0 ? *n : 1);
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < *n; i++) {
        out[i] = PyFloat_AsDouble(items[i]);
        if (out[i] == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] is not a number", what, i);
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return out;
}

static PyObject *
dot(PyObject *self, PyObject *args)
{
    PyObject *a_obj, *b_obj;
    if (!PyArg_ParseTuple(args, "OO:dot", &a_obj, &b_obj)) {
        return NULL;
    }
    Py_ssize_t na, nb;
    double *a = as_doubles(a_obj, "a", &na);
    if (a == NULL) {
        return NULL;
    }
    double *b = as_doubles(b_obj, "b", &nb);
    if (b == NULL) {
        PyMem_Free(a);
        return NULL;
    }
    if (na != nb) {
        PyMem_Free(a);
        PyMem_Free(b);
        return PyErr_Format(PyExc_ValueError, "dot: lengths differ (%zd and %zd)", na, nb);
    }
    double sum = 0.0;
    for (Py_ssize_t i = 0; i < na; i++) {
        sum += a[i] * b[i];
    }
    PyMem_Free(a);
    PyMem_Free(b);
    return PyFloat_FromDouble(sum);
}

static PyObject *
norm(PyObject *self, PyObject *arg)
{
    Py_ssize_t n;
    double *a = as_doubles(arg, "a", &n);
    if (a == NULL) {
        return NULL;
    }
    /* Scale by the largest magnitude so squares neither overflow nor underflow. */
    double scale = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double m = fabs(a[i]);
        if (isnan(m)) {
            PyMem_Free(a);
            return PyFloat_FromDouble(m);
        }
        if (m > scale) {
            scale = m;
        }
    }
    double sum = 0.0;
    if (scale > 0.0 && isfinite(scale)) {
        for (Py_ssize_t i = 0; i < n; i++) {
            double x = a[i] / scale;
            sum += x * x;
        }
    }
    PyMem_Free(a);
    if (!isfinite(scale)) {
        return PyFloat_FromDouble(scale);
    }
    return PyFloat_FromDouble(scale * sqrt(sum));
}

static PyObject *
built_for_python(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(POINTOPS_PYTHON_VERSION);
}

static PyObject *
built_for_cuda(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(POINTOPS_CUDA_VERSION);
}

static PyMethodDef core_methods[] = {
    {"dot", dot, METH_VARARGS, "dot(a, b) -> float: the dot product of two equally long sequences of numbers."},
    {"norm", norm, METH_O, "norm(a) -> float: the Euclidean length of a sequence of numbers."},
    {"built_for_python", built_for_python, METH_NOARGS,
     "built_for_python() -> str: the Python version ('3.12') this extension was compiled against."},
    {"built_for_cuda", built_for_cuda, METH_NOARGS,
     "built_for_cuda() -> str: the CUDA version found at build time ('13.0'), or 'none'."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pointops._core",
    .m_doc = "Point operations implemented in C.",
    .m_size = -1,
    .m_methods = core_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModule_Create(&core_module);
}

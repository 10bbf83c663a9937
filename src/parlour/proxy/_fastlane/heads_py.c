/* Python-callable wrappers around http_heads.c, for tests (the engine calls the C API
 * directly). Bytes in, plain tuples out; offsets are turned into bytes objects. */
#include "heads_py.h"

#include "http_heads.h"

static const char *const method_names[] = {"GET", "HEAD", "OPTIONS"};

static PyObject *slice(const char *buf, uint32_t off, uint32_t len)
{
    return PyBytes_FromStringAndSize(buf + off, (Py_ssize_t)len);
}

static PyObject *fields_tuple(const char *buf, const fl_field *fields, int n)
{
    PyObject *t = PyTuple_New(n);
    if (t == NULL)
        return NULL;
    for (int k = 0; k < n; k++) {
        const fl_field *f = &fields[k];
        PyObject *pair = Py_BuildValue("(y#y#)", buf + f->name_off, (Py_ssize_t)f->name_len,
                                       buf + f->value_off, (Py_ssize_t)f->value_len);
        if (pair == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, k, pair);
    }
    return t;
}

static int check_size(Py_ssize_t v, const char *what)
{
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", what);
        return -1;
    }
    return 0;
}

/* parse_request(buf, max_head, hash_header) -> int | tuple */
static PyObject *py_parse_request(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    Py_ssize_t max_head;
    const char *hash = NULL;
    Py_ssize_t hash_len = 0;
    if (!PyArg_ParseTuple(args, "y*nz#:parse_request", &buf, &max_head, &hash, &hash_len))
        return NULL;
    PyObject *res = NULL;
    fl_request req;
    if (check_size(max_head, "max_head") < 0)
        goto done;
    const char *b = buf.buf;
    int r = fl_parse_request(b, (size_t)buf.len, (size_t)max_head, hash, (size_t)hash_len, &req);
    if (r != FL_OK) {
        res = PyLong_FromLong(r);
        goto done;
    }
    PyObject *fields = fields_tuple(b, req.fields, req.nfields);
    if (fields == NULL)
        goto done;
    PyObject *key = Py_None;
    if (req.key_off >= 0)
        key = slice(b, (uint32_t)req.key_off, req.key_len);
    else
        Py_INCREF(key);
    if (key == NULL) {
        Py_DECREF(fields);
        goto done;
    }
    res = Py_BuildValue("(nsy#y#NNN)", (Py_ssize_t)req.head_len, method_names[req.method],
                        b + req.url_off, (Py_ssize_t)req.url_len, b + req.host_off,
                        (Py_ssize_t)req.host_len, key, PyBool_FromLong(req.keep_alive), fields);
done:
    PyBuffer_Release(&buf);
    return res;
}


/* What a builder wrote into res (a bytes object of its capacity): res cut to the n bytes
 * written, or None when the builder found it too small (n < 0). Takes res over. */
static PyObject *built(PyObject *res, ssize_t n)
{
    if (n < 0) {
        Py_DECREF(res);
        return Py_NewRef(Py_None);
    }
    _PyBytes_Resize(&res, (Py_ssize_t)n); /* (NULL with an exception if it fails) */
    return res;
}

/* build_request(buf, client_ip, max_head, cap=-1, https=False) -> bytes | None */
static PyObject *py_build_request(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    const char *ip;
    Py_ssize_t ip_len, max_head, cap = -1;
    int https = 0;
    if (!PyArg_ParseTuple(args, "y*s#n|np:build_request", &buf, &ip, &ip_len, &max_head, &cap, &https))
        return NULL;
    PyObject *res = NULL;
    fl_request req;
    if (check_size(max_head, "max_head") < 0)
        goto done;
    const char *b = buf.buf;
    if (fl_parse_request(b, (size_t)buf.len, (size_t)max_head, NULL, 0, &req) != FL_OK) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    if (cap < 0) /* every field line may gain one byte (": "), plus the added fields */
        cap = (Py_ssize_t)req.head_len + req.nfields + ip_len + req.host_len + 129;
    res = PyBytes_FromStringAndSize(NULL, cap);
    if (res != NULL)
        res = built(res, fl_build_request(PyBytes_AS_STRING(res), (size_t)cap, b, &req, ip,
                                          (size_t)ip_len, https));
done:
    PyBuffer_Release(&buf);
    return res;
}

/* parse_response(buf, max_head) -> int | tuple */
static PyObject *py_parse_response(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    Py_ssize_t max_head;
    if (!PyArg_ParseTuple(args, "y*n:parse_response", &buf, &max_head))
        return NULL;
    PyObject *res = NULL;
    fl_response resp;
    if (check_size(max_head, "max_head") < 0)
        goto done;
    const char *b = buf.buf;
    int r = fl_parse_response(b, (size_t)buf.len, (size_t)max_head, &resp);
    if (r != FL_OK) {
        res = PyLong_FromLong(r);
        goto done;
    }
    PyObject *fields = fields_tuple(b, resp.fields, resp.nfields);
    if (fields == NULL)
        goto done;
    res = Py_BuildValue("(niiy#NNKNN)", (Py_ssize_t)resp.head_len, resp.version_minor,
                        resp.status, b + resp.reason_off, (Py_ssize_t)resp.reason_len,
                        PyBool_FromLong(resp.chunked), PyBool_FromLong(resp.has_length),
                        (unsigned long long)resp.content_length,
                        PyBool_FromLong(resp.keep_alive), fields);
done:
    PyBuffer_Release(&buf);
    return res;
}

/* build_response(buf, max_head, framing, keep_alive, cap=-1, hide_server=False)
 *   -> bytes | None */
static PyObject *py_build_response(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    Py_ssize_t max_head, cap = -1;
    int framing, keep_alive, hide_server = 0;
    if (!PyArg_ParseTuple(args, "y*nip|np:build_response", &buf, &max_head, &framing,
                          &keep_alive, &cap, &hide_server))
        return NULL;
    PyObject *res = NULL;
    fl_response resp;
    if (check_size(max_head, "max_head") < 0)
        goto done;
    const char *b = buf.buf;
    if (fl_parse_response(b, (size_t)buf.len, (size_t)max_head, &resp) != FL_OK) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    if (cap < 0)
        cap = (Py_ssize_t)resp.head_len + resp.nfields + 128;
    res = PyBytes_FromStringAndSize(NULL, cap);
    if (res != NULL)
        res = built(res, fl_build_response(PyBytes_AS_STRING(res), (size_t)cap, b, &resp,
                                           framing, keep_alive, hide_server));
done:
    PyBuffer_Release(&buf);
    return res;
}

/* dechunk(buf, max_trailer, piece) -> (status, data, consumed): buf is fed `piece` bytes
 * at a time (each piece until the decoder has used it up), as reads would deliver it */
static PyObject *py_dechunk(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    Py_ssize_t max_trailer, piece;
    if (!PyArg_ParseTuple(args, "y*nn:dechunk", &buf, &max_trailer, &piece))
        return NULL;
    PyObject *res = NULL, *out = NULL;
    if (check_size(max_trailer, "max_trailer") < 0)
        goto done;
    if (piece <= 0) {
        PyErr_SetString(PyExc_ValueError, "piece must be > 0");
        goto done;
    }
    out = PyByteArray_FromStringAndSize(NULL, 0);
    if (out == NULL)
        goto done;
    fl_chunks c;
    fl_chunks_init(&c);
    const char *b = buf.buf;
    size_t len = (size_t)buf.len, pos = 0;
    int status = FL_CHUNK_MORE;
    while (pos < len && status != FL_CHUNK_DONE && status != FL_CHUNK_BAD) {
        size_t stop = len - pos > (size_t)piece ? pos + (size_t)piece : len;
        do { /* one read's worth */
            size_t used = 0, data_len = 0;
            const char *data = NULL;
            status = fl_chunks_feed(&c, b + pos, stop - pos, (size_t)max_trailer, &used, &data,
                                    &data_len);
            if (used > stop - pos) {
                PyErr_SetString(PyExc_AssertionError, "consumed more than given");
                goto done;
            }
            pos += used;
            if (status == FL_CHUNK_DATA) {
                if (data < b || data + data_len > b + pos) {
                    PyErr_SetString(PyExc_AssertionError, "data outside the input");
                    goto done;
                }
                Py_ssize_t have = PyByteArray_GET_SIZE(out);
                if (PyByteArray_Resize(out, have + (Py_ssize_t)data_len) < 0)
                    goto done;
                memcpy(PyByteArray_AS_STRING(out) + have, data, data_len);
            }
        } while (status == FL_CHUNK_DATA && pos < stop);
    }
    if (status == FL_CHUNK_DATA) /* the input ended with a data piece */
        status = FL_CHUNK_MORE;
    res = Py_BuildValue("(iy#n)", status, PyByteArray_AS_STRING(out), PyByteArray_GET_SIZE(out),
                        (Py_ssize_t)pos);
done:
    Py_XDECREF(out);
    PyBuffer_Release(&buf);
    return res;
}

static PyMethodDef head_methods[] = {
    {"parse_request", py_parse_request, METH_VARARGS,
     "parse_request(buf, max_head, hash_header) -> int | tuple"},
    {"build_request", py_build_request, METH_VARARGS,
     "build_request(buf, client_ip, max_head, cap=-1) -> bytes | None"},
    {"parse_response", py_parse_response, METH_VARARGS,
     "parse_response(buf, max_head) -> int | tuple"},
    {"build_response", py_build_response, METH_VARARGS,
     "build_response(buf, max_head, framing, keep_alive, cap=-1, hide_server=False) -> "
     "bytes | None"},
    {"dechunk", py_dechunk, METH_VARARGS,
     "dechunk(buf, max_trailer, piece) -> (status, data, consumed)"},
    {NULL, NULL, 0, NULL},
};

int fl_add_head_functions(PyObject *module)
{
    static const struct {
        const char *name;
        long value;
    } constants[] = {
        {"FL_OK", FL_OK},
        {"FL_INCOMPLETE", FL_INCOMPLETE},
        {"FL_PUNT", FL_PUNT},
        {"FL_BAD", FL_BAD},
        {"FL_MAX_FIELDS", FL_MAX_FIELDS},
        {"FL_GET", FL_GET},
        {"FL_HEAD", FL_HEAD},
        {"FL_OPTIONS", FL_OPTIONS},
        {"FL_FRAME_LENGTH", FL_FRAME_LENGTH},
        {"FL_FRAME_CHUNKED", FL_FRAME_CHUNKED},
        {"FL_FRAME_NONE", FL_FRAME_NONE},
        {"FL_FRAME_CLOSE", FL_FRAME_CLOSE},
        {"FL_CHUNK_MORE", FL_CHUNK_MORE},
        {"FL_CHUNK_DATA", FL_CHUNK_DATA},
        {"FL_CHUNK_DONE", FL_CHUNK_DONE},
        {"FL_CHUNK_BAD", FL_CHUNK_BAD},
    };
    for (size_t k = 0; k < sizeof constants / sizeof constants[0]; k++)
        if (PyModule_AddIntConstant(module, constants[k].name, constants[k].value) < 0)
            return -1;
    return PyModule_AddFunctions(module, head_methods);
}

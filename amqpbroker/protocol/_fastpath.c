/* The two per-message loops of protocol/fastpath.py, in C.
 *
 * whole_publish: a basic.publish, its content header and its one body frame, all in the
 * receive buffer, checked and cut out in one pass (in Python: three struct unpacks, a dozen
 * comparisons, five slices and two decodes per message). build_deliver: basic.deliver and its
 * content frames as one bytes object (in Python: nine parts, joined again by writelines).
 *
 * fastpath.py keeps the Python versions (whole_publish_py, build_deliver_py) as the reference
 * and falls back to them when this module is not built; tests/unit/protocol/test_fastpath_c.py
 * checks that both agree on any input: valid, cut short at every byte, and garbage.
 *
 * This is a CPython extension like storage/_record.c, not a cffi one: both functions return
 * Python objects (str, bytes, tuples), which cffi cannot build without a Python-level copy per
 * field - the cost this module exists to remove.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FRAME_METHOD 1
#define FRAME_HEADER 2
#define FRAME_BODY 3
#define FRAME_END 0xCE

static uint16_t get_u16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static uint32_t get_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_u64(const unsigned char *p) {
    return ((uint64_t)get_u32(p) << 32) | get_u32(p + 4);
}

static void put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v;
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

/* whole_publish(buf, pos, frame_max, max_message_size)
 *   -> None, or (channel, exchange, routing_key, mandatory, immediate, properties, body, next)
 * None means "not the usual whole publish at pos" (incomplete, another frame, anything
 * malformed): nothing is consumed and the caller's frame-by-frame path decides, errors
 * included. Exactly the checks of fastpath.whole_publish_py. */
static PyObject *whole_publish(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "whole_publish takes 4 or 5 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t frame_max = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_size = PyLong_AsSsize_t(args[3]);
    /* the end of the valid input: a read buffer has room beyond it (protocol/connection.py) */
    Py_ssize_t limit = nargs == 5 ? PyLong_AsSsize_t(args[4]) : PY_SSIZE_T_MAX;
    if (PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len < limit ? view.len : limit;
    PyObject *result = NULL, *exchange = NULL, *routing_key = NULL, *props = NULL, *body = NULL;

    if (pos < 0 || n - pos < 7 || b[pos] != FRAME_METHOD)
        goto none;
    unsigned int channel = get_u16(b + pos + 1);
    uint32_t size = get_u32(b + pos + 3);
    if (size > (uint64_t)frame_max || size < 4)
        goto none;
    Py_ssize_t end = pos + 7 + (Py_ssize_t)size;
    if (n <= end || b[end] != FRAME_END)
        goto none;
    const unsigned char *m = b + pos + 7;              /* the method payload, size bytes */
    if (m[0] != 0 || m[1] != 60 || m[2] != 0 || m[3] != 40)
        goto none;

    Py_ssize_t h = end + 1;                            /* the content header frame */
    if (n < h + 7 || b[h] != FRAME_HEADER || get_u16(b + h + 1) != channel)
        goto none;
    uint32_t hsize = get_u32(b + h + 3);
    if (hsize < 14 || hsize > (uint64_t)frame_max)
        goto none;
    Py_ssize_t hend = h + 7 + (Py_ssize_t)hsize;
    if (n <= hend || b[hend] != FRAME_END)
        goto none;
    if (get_u16(b + h + 7) != 60)
        goto none;
    uint64_t body_size = get_u64(b + h + 11);
    if (max_size < 0 || body_size > (uint64_t)max_size)
        goto none;
    Py_ssize_t bstart, bend;
    if (body_size) {
        Py_ssize_t f = hend + 1;                       /* the body frame */
        if (n < f + 7 || b[f] != FRAME_BODY || get_u16(b + f + 1) != channel
            || get_u32(b + f + 3) != body_size)
            goto none;
        bstart = f + 7;
        bend = bstart + (Py_ssize_t)body_size;
        if (n <= bend || b[bend] != FRAME_END)
            goto none;
    } else {
        bstart = bend = hend;
    }

    /* basic.publish arguments: reserved short, exchange shortstr, routing key shortstr, bits */
    if (size < 7)
        goto none;
    Py_ssize_t ex_end = 7 + m[6];
    if (ex_end >= (Py_ssize_t)size)
        goto none;
    Py_ssize_t rk_end = ex_end + 1 + m[ex_end];
    if (rk_end >= (Py_ssize_t)size)
        goto none;
    unsigned int bits = m[rk_end];
    exchange = PyUnicode_DecodeUTF8((const char *)m + 7, ex_end - 7, NULL);
    if (exchange == NULL)
        goto undecodable;
    routing_key = PyUnicode_DecodeUTF8((const char *)m + ex_end + 1, rk_end - ex_end - 1, NULL);
    if (routing_key == NULL)
        goto undecodable;
    props = PyBytes_FromStringAndSize((const char *)b + h + 19, hend - (h + 19));
    if (props == NULL)
        goto done;
    body = PyBytes_FromStringAndSize((const char *)b + bstart, bend - bstart);
    if (body == NULL)
        goto done;
    result = Py_BuildValue("(INNOONNn)", channel, exchange, routing_key,
                           (bits & 1) ? Py_True : Py_False, (bits & 2) ? Py_True : Py_False,
                           props, body, bend + 1);
    exchange = routing_key = props = body = NULL;      /* stolen by N, even on failure */
    goto done;
undecodable:
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        goto done;
    PyErr_Clear();
none:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(exchange);
    Py_XDECREF(routing_key);
    Py_XDECREF(props);
    Py_XDECREF(body);
    PyBuffer_Release(&view);
    return result;
}

/* A str's UTF-8 (no copy: CPython keeps it with the str; ASCII is the str's own bytes) or
 * any buffer, as a Py_buffer; obj is NULL for a str (nothing to release). */
static int text_or_buffer(PyObject *o, Py_buffer *view) {
    if (PyUnicode_Check(o)) {
        Py_ssize_t len;
        const char *p = PyUnicode_AsUTF8AndSize(o, &len);
        if (p == NULL)
            return -1;
        view->buf = (void *)p;
        view->len = len;
        view->obj = NULL;
        return 0;
    }
    return PyObject_GetBuffer(o, view, PyBUF_SIMPLE);
}

/* build_deliver(channel, consumer_tag, delivery_tag, redelivered, exchange, routing_key,
 *               properties, body, frame_max) -> bytes
 * basic.deliver + content header + body frames (split by frame_max), joined: the bytes of
 * b"".join(fastpath.build_deliver_py(...)). consumer_tag is an encoded shortstr body;
 * exchange and routing_key are that or a str (encoded here, as UTF-8). */
static PyObject *build_deliver(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "build_deliver takes 9 arguments");
        return NULL;
    }
    long channel = PyLong_AsLong(args[0]);
    if (channel == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long tag = PyLong_AsUnsignedLongLong(args[2]);
    if (tag == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int redelivered = PyObject_IsTrue(args[3]);
    if (redelivered < 0)
        return NULL;
    Py_ssize_t frame_max = PyLong_AsSsize_t(args[8]);
    if (frame_max == -1 && PyErr_Occurred())
        return NULL;
    if (channel < 0 || channel > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "channel out of range");
        return NULL;
    }
    if (frame_max < 9) {
        PyErr_SetString(PyExc_ValueError, "frame_max too small");
        return NULL;
    }
    Py_buffer ctag, ex, rk, props, body;
    int got = 0;
    PyObject *out = NULL;
    if (PyObject_GetBuffer(args[1], &ctag, PyBUF_SIMPLE) < 0) goto release;
    got = 1;
    if (text_or_buffer(args[4], &ex) < 0) goto release;
    got = 2;
    if (text_or_buffer(args[5], &rk) < 0) goto release;
    got = 3;
    if (PyObject_GetBuffer(args[6], &props, PyBUF_SIMPLE) < 0) goto release;
    got = 4;
    if (PyObject_GetBuffer(args[7], &body, PyBUF_SIMPLE) < 0) goto release;
    got = 5;
    if (ctag.len > 255 || ex.len > 255 || rk.len > 255) {
        PyErr_SetString(PyExc_ValueError, "shortstr over 255 bytes");
        goto release;
    }
    if (props.len > 0xffffffffLL - 12) {
        PyErr_SetString(PyExc_ValueError, "property list too large");
        goto release;
    }
    {
        Py_ssize_t chunk = frame_max - 8;
        Py_ssize_t msize = 4 + 1 + ctag.len + 8 + 1 + 1 + ex.len + 1 + rk.len;
        Py_ssize_t nframes = body.len ? (body.len + chunk - 1) / chunk : 0;
        Py_ssize_t total = 8 + msize + 8 + 12 + props.len + body.len + 8 * nframes;
        out = PyBytes_FromStringAndSize(NULL, total);
        if (out == NULL)
            goto release;
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
        p[0] = FRAME_METHOD; put_u16(p + 1, (uint16_t)channel); put_u32(p + 3, (uint32_t)msize);
        p[7] = 0; p[8] = 60; p[9] = 0; p[10] = 60;
        p += 11;
        *p++ = (unsigned char)ctag.len;
        memcpy(p, ctag.buf, ctag.len); p += ctag.len;
        put_u64(p, tag); p += 8;
        *p++ = redelivered ? 1 : 0;
        *p++ = (unsigned char)ex.len;
        memcpy(p, ex.buf, ex.len); p += ex.len;
        *p++ = (unsigned char)rk.len;
        memcpy(p, rk.buf, rk.len); p += rk.len;
        *p++ = FRAME_END;
        p[0] = FRAME_HEADER; put_u16(p + 1, (uint16_t)channel);
        put_u32(p + 3, (uint32_t)(12 + props.len));
        p += 7;
        p[0] = 0; p[1] = 60; p[2] = 0; p[3] = 0;
        put_u64(p + 4, (uint64_t)body.len);
        p += 12;
        memcpy(p, props.buf, props.len); p += props.len;
        *p++ = FRAME_END;
        const unsigned char *src = (const unsigned char *)body.buf;
        for (Py_ssize_t i = 0; i < body.len; i += chunk) {
            Py_ssize_t part = body.len - i < chunk ? body.len - i : chunk;
            p[0] = FRAME_BODY; put_u16(p + 1, (uint16_t)channel); put_u32(p + 3, (uint32_t)part);
            p += 7;
            memcpy(p, src + i, part); p += part;
            *p++ = FRAME_END;
        }
    }
release:
    if (got >= 5) PyBuffer_Release(&body);
    if (got >= 4) PyBuffer_Release(&props);
    if (got >= 3 && rk.obj) PyBuffer_Release(&rk);
    if (got >= 2 && ex.obj) PyBuffer_Release(&ex);
    if (got >= 1) PyBuffer_Release(&ctag);
    return out;
}

static PyMethodDef methods[] = {
    {"whole_publish", (PyCFunction)(void (*)(void))whole_publish, METH_FASTCALL,
     "whole_publish(buf, pos, frame_max, max_message_size) -> None or (channel, exchange, "
     "routing_key, mandatory, immediate, properties, body, next_pos)"},
    {"build_deliver", (PyCFunction)(void (*)(void))build_deliver, METH_FASTCALL,
     "build_deliver(channel, consumer_tag, delivery_tag, redelivered, exchange, routing_key, "
     "properties, body, frame_max) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModule_Create(&module); }

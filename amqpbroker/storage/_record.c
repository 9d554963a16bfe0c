/* The record layout of storage/record.py, packed and unpacked in C.
 *
 * The hot path of every link between processes: a publish or a delivery is a small header
 * followed by one record (amqpbroker/contract.py). Doing this in Python costs ~2 us per
 * record (a dozen slices and struct calls); here it is one pass and one allocation per field.
 * record.py keeps the Python versions (pack_record_py / unpack_record_py) as the reference;
 * tests/unit/storage/test_record_codec.py checks that both agree on any record.
 *
 * Record layout (big-endian), after `rec_len` every length counts bytes:
 *     rec_len u32 | timestamp u64 | flags u8 | ex_len u8 exchange | rk_len u8 routing_key |
 *     props_len u32 properties | body_len u32 body
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RECORD_FIXED (8 + 1 + 1 + 1 + 4 + 4)

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_u64(const unsigned char *p) {
    return ((uint64_t)get_u32(p) << 32) | get_u32(p + 4);
}

/* pack_record(prefix, timestamp, flags, exchange, routing_key, properties, body) -> bytes
 * prefix (bytes) is copied first: the message header the record travels behind. */
static PyObject *pack_record(PyObject *self, PyObject *args) {
    Py_buffer prefix, props, body;
    unsigned long long ts;
    unsigned int flags;
    PyObject *exchange, *routing_key;
    if (!PyArg_ParseTuple(args, "y*KIUUy*y*", &prefix, &ts, &flags, &exchange, &routing_key,
                          &props, &body))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t ex_len, rk_len;
    const char *ex = PyUnicode_AsUTF8AndSize(exchange, &ex_len);
    const char *rk = ex ? PyUnicode_AsUTF8AndSize(routing_key, &rk_len) : NULL;
    if (!ex || !rk)
        goto done;
    if (ex_len > 255 || rk_len > 255) {
        PyErr_SetString(PyExc_ValueError,
                        "exchange and routing key are AMQP shortstrs: at most 255 bytes");
        goto done;
    }
    if (props.len > 0xffffffffLL || body.len > 0xffffffffLL) {
        PyErr_SetString(PyExc_ValueError, "record field over 4 GiB");
        goto done;
    }
    uint64_t rec_len = RECORD_FIXED + ex_len + rk_len + props.len + body.len;
    if (rec_len > 0xffffffffULL) {
        PyErr_SetString(PyExc_ValueError, "record over 4 GiB");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, prefix.len + 4 + (Py_ssize_t)rec_len);
    if (!out)
        goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(p, prefix.buf, prefix.len); p += prefix.len;
    put_u32(p, (uint32_t)rec_len); p += 4;
    put_u64(p, ts); p += 8;
    *p++ = (unsigned char)flags;
    *p++ = (unsigned char)ex_len; memcpy(p, ex, ex_len); p += ex_len;
    *p++ = (unsigned char)rk_len; memcpy(p, rk, rk_len); p += rk_len;
    put_u32(p, (uint32_t)props.len); p += 4;
    memcpy(p, props.buf, props.len); p += props.len;
    put_u32(p, (uint32_t)body.len); p += 4;
    memcpy(p, body.buf, body.len);
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&props);
    PyBuffer_Release(&body);
    return out;
}

/* unpack_record(buf, pos) -> (timestamp, exchange, routing_key, properties, body, flags, end) */
static PyObject *unpack_record(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &pos))
        return NULL;
    PyObject *out = NULL, *ex = NULL, *rk = NULL, *props = NULL, *body = NULL;
    const unsigned char *b = (const unsigned char *)buf.buf;
    Py_ssize_t n = buf.len;
    if (pos < 0 || pos + 4 + RECORD_FIXED > n)
        goto short_;
    uint32_t rec_len = get_u32(b + pos);
    Py_ssize_t end = pos + 4 + (Py_ssize_t)rec_len;
    if (rec_len < RECORD_FIXED || end > n)
        goto short_;
    const unsigned char *p = b + pos + 4;
    uint64_t ts = get_u64(p); p += 8;
    unsigned int flags = *p++;
    unsigned int ex_len = *p++;
    if (p + ex_len + 1 > b + end) goto bad;
    ex = PyUnicode_DecodeUTF8((const char *)p, ex_len, "strict"); p += ex_len;
    if (!ex) goto done;
    unsigned int rk_len = *p++;
    if (p + rk_len + 4 > b + end) goto bad;
    rk = PyUnicode_DecodeUTF8((const char *)p, rk_len, "strict"); p += rk_len;
    if (!rk) goto done;
    uint32_t props_len = get_u32(p); p += 4;
    if ((Py_ssize_t)props_len + 4 > (b + end) - p) goto bad;
    props = PyBytes_FromStringAndSize((const char *)p, props_len); p += props_len;
    if (!props) goto done;
    uint32_t body_len = get_u32(p); p += 4;
    if ((Py_ssize_t)body_len != (b + end) - p) goto bad;
    body = PyBytes_FromStringAndSize((const char *)p, body_len);
    if (!body) goto done;
    out = Py_BuildValue("(KOOOOIn)", (unsigned long long)ts, ex, rk, props, body, flags, end);
    goto done;
bad:
    PyErr_SetString(PyExc_ValueError, "record length does not match its fields");
    goto done;
short_:
    PyErr_SetString(PyExc_ValueError, "truncated record");
done:
    Py_XDECREF(ex); Py_XDECREF(rk); Py_XDECREF(props); Py_XDECREF(body);
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef methods[] = {
    {"pack_record", pack_record, METH_VARARGS,
     "pack_record(prefix, timestamp, flags, exchange, routing_key, properties, body) -> bytes"},
    {"unpack_record", unpack_record, METH_VARARGS,
     "unpack_record(buf, pos) -> (timestamp, exchange, routing_key, properties, body, flags, end)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_record", NULL, -1, methods};

PyMODINIT_FUNC PyInit__record(void) { return PyModule_Create(&module); }

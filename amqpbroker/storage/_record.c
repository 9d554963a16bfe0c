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

/* An int as a u64, (unsigned long long)-1 with an exception set if it is not one. Where a
 * long has 64 bits, PyLong_AsUnsignedLong: CPython 3.11's PyLong_AsUnsignedLongLong goes
 * through its generic byte-array conversion for any int of more than one digit (a
 * millisecond timestamp, an offset), ~220 instructions against ~30 (callgrind). */
static unsigned long long as_u64(PyObject *v) {
#if ULONG_MAX >= 0xffffffffffffffffULL
    return PyLong_AsUnsignedLong(v);
#else
    return PyLong_AsUnsignedLongLong(v);
#endif
}

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

/* One record in the layout above at p (its fields checked and measured by the caller). */
static void write_record(unsigned char *p, uint32_t rec_len, unsigned long long ts,
                         unsigned long flags, const char *ex, Py_ssize_t ex_len,
                         const char *rk, Py_ssize_t rk_len, const Py_buffer *props,
                         const Py_buffer *body) {
    put_u32(p, rec_len); p += 4;
    put_u64(p, ts); p += 8;
    *p++ = (unsigned char)flags;
    *p++ = (unsigned char)ex_len; memcpy(p, ex, ex_len); p += ex_len;
    *p++ = (unsigned char)rk_len; memcpy(p, rk, rk_len); p += rk_len;
    put_u32(p, (uint32_t)props->len); p += 4;
    memcpy(p, props->buf, props->len); p += props->len;
    put_u32(p, (uint32_t)body->len); p += 4;
    memcpy(p, body->buf, body->len);
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
    memcpy(p, prefix.buf, prefix.len);
    write_record(p + prefix.len, (uint32_t)rec_len, ts, flags, ex, ex_len, rk, rk_len, &props,
                 &body);
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&props);
    PyBuffer_Release(&body);
    return out;
}

/* The exchange, routing key and properties of the last record a batch decoded (their bytes
 * in the caller's buffer and the objects made of them): the records of a batch mostly share
 * them (one queue's deliveries, one publisher's messages), so the next record that has the
 * same bytes gets the same immutable objects instead of new ones (unpack_messages). The
 * timestamp likewise: a read's publishes carry the session's clock, one millisecond. */
typedef struct {
    const unsigned char *at[3];
    Py_ssize_t len[3];
    PyObject *obj[3];         /* borrowed from the records already decoded */
    uint64_t ts;              /* the timestamp last decoded, and its int (borrowed, or NULL): */
    PyObject *ts_obj;         /* a batch's records mostly share their millisecond */
} field_memo;

/* A new reference to field k (0 exchange, 1 routing key: str; 2 properties: bytes) made of
 * p[0:len], the memo's object if it holds the same bytes. */
static PyObject *memo_field(field_memo *memo, int k, const unsigned char *p, Py_ssize_t len) {
    if (memo && memo->obj[k] && memo->len[k] == len && memcmp(memo->at[k], p, len) == 0)
        return Py_NewRef(memo->obj[k]);
    PyObject *v = k < 2 ? PyUnicode_DecodeUTF8((const char *)p, len, "strict")
                        : PyBytes_FromStringAndSize((const char *)p, len);
    if (v && memo) {
        memo->at[k] = p;
        memo->len[k] = len;
        memo->obj[k] = v;
    }
    return v;
}

/* The record at `pos` of b[0:n]: fields[0..5] get new references to (timestamp, exchange,
 * routing_key, properties, body, flags) and *end_out its end; -1 with an exception set.
 * `memo` (or NULL) shares fields with the record decoded before (field_memo). */
static int unpack_record_at(const unsigned char *b, Py_ssize_t n, Py_ssize_t pos,
                            PyObject *fields[6], Py_ssize_t *end_out, field_memo *memo) {
    PyObject *ex = NULL, *rk = NULL, *props = NULL, *body = NULL;
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
    ex = memo_field(memo, 0, p, ex_len); p += ex_len;
    if (!ex) goto fail;
    unsigned int rk_len = *p++;
    if (p + rk_len + 4 > b + end) goto bad;
    rk = memo_field(memo, 1, p, rk_len); p += rk_len;
    if (!rk) goto fail;
    uint32_t props_len = get_u32(p); p += 4;
    if ((Py_ssize_t)props_len + 4 > (b + end) - p) goto bad;
    props = memo_field(memo, 2, p, props_len); p += props_len;
    if (!props) goto fail;
    uint32_t body_len = get_u32(p); p += 4;
    if ((Py_ssize_t)body_len != (b + end) - p) goto bad;
    body = PyBytes_FromStringAndSize((const char *)p, body_len);
    if (!body) goto fail;
    int ts_seen = memo && memo->ts_obj && memo->ts == ts;
    fields[0] = ts_seen ? Py_NewRef(memo->ts_obj) : PyLong_FromUnsignedLongLong(ts);
    fields[5] = PyLong_FromUnsignedLong(flags);
    if (!fields[0] || !fields[5]) {
        Py_XDECREF(fields[0]);
        Py_XDECREF(fields[5]);
        goto fail;
    }
    if (memo && !ts_seen) {
        memo->ts = ts;
        memo->ts_obj = fields[0];
    }
    fields[1] = ex; fields[2] = rk; fields[3] = props; fields[4] = body;
    *end_out = end;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "record length does not match its fields");
    goto fail;
short_:
    PyErr_SetString(PyExc_ValueError, "truncated record");
fail:
    Py_XDECREF(ex); Py_XDECREF(rk); Py_XDECREF(props); Py_XDECREF(body);
    return -1;
}

/* unpack_record(buf, pos) -> (timestamp, exchange, routing_key, properties, body, flags, end) */
static PyObject *unpack_record(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, end;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &pos))
        return NULL;
    PyObject *fields[6], *out = NULL;
    if (unpack_record_at((const unsigned char *)buf.buf, buf.len, pos, fields, &end, NULL) == 0) {
        out = Py_BuildValue("(NNNNNNn)", fields[0], fields[1], fields[2], fields[3],
                            fields[4], fields[5], end);
    }
    PyBuffer_Release(&buf);
    return out;
}

/* The hot messages of the contract (amqpbroker/contract.py): a type byte, fixed fields
 * (format characters B = u8, I = u32, Q = u64, ? = bool, big-endian), then one record.
 * The message is a tuple (a NamedTuple), its last item the record (a tuple of six).
 *
 * pack_message(prefix, type_id, fmt, msg) -> bytes
 * unpack_message(buf, pos, fmt, message_cls, record_cls) -> message_cls instance */
/* A message's fixed fields (struct format ``fmt``: ? B I Q, big-endian) written at ``p``;
   the end of what was written, or NULL with an exception set. */
static unsigned char *put_fixed(unsigned char *p, PyObject *msg, const char *fmt,
                                Py_ssize_t nfixed) {
    for (Py_ssize_t i = 0; i < nfixed; i++) {
        PyObject *v = PyTuple_GET_ITEM(msg, i);
        if (fmt[i] == '?') {
            int t = PyObject_IsTrue(v);
            if (t < 0) return NULL;
            *p++ = (unsigned char)t;
            continue;
        }
        unsigned long long x = as_u64(v);
        if (x == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
        if (fmt[i] == 'Q') { put_u64(p, x); p += 8; }
        else if (fmt[i] == 'I') {
            if (x > 0xffffffffULL) { PyErr_SetString(PyExc_OverflowError, "u32 field"); return NULL; }
            put_u32(p, (uint32_t)x); p += 4;
        } else {
            if (x > 0xffULL) { PyErr_SetString(PyExc_OverflowError, "u8 field"); return NULL; }
            *p++ = (unsigned char)x;
        }
    }
    return p;
}

static Py_ssize_t fmt_size(const char *fmt) {
    Py_ssize_t n = 0;
    for (; *fmt && *fmt != '*' && *fmt != '#'; fmt++)
        n += (*fmt == 'Q') ? 8 : (*fmt == 'I') ? 4 : 1;
    return n;
}

/* A format ending in '*' is a message whose last item is a list of records (``pubs``): on
 * the wire a u32 count, then each record in the log's layout. The fixed fields before it.
 * A format ending in '#' (``dlvs``) is the same on the wire; it is decoded as a run (the
 * records' bytes undecoded and their count: record.RecordRun) instead of a list of records,
 * and encoded from either. */
static Py_ssize_t fmt_fixed(const char *fmt, int *is_list) {
    Py_ssize_t n = (Py_ssize_t)strlen(fmt);
    *is_list = n > 0 && (fmt[n - 1] == '*' || fmt[n - 1] == '#');
    return n - *is_list;
}

static int fmt_is_run(const char *fmt) {
    size_t n = strlen(fmt);
    return n > 0 && fmt[n - 1] == '#';
}

/* A run's records (its ``data``: bytes, or a C-contiguous memoryview, as a stored run's
 * slice or a ring's lent view; borrowed: the run holds it) as a pointer and a length, and
 * their ``count``; -1 with an exception set if `run` is not one. */
static int run_parts(PyObject *run, const char **buf, Py_ssize_t *len, Py_ssize_t *count) {
    PyObject *d = PyObject_GetAttrString(run, "data");
    if (!d) return -1;
    PyObject *c = PyObject_GetAttrString(run, "count");
    if (!c) { Py_DECREF(d); return -1; }
    *count = PyLong_AsSsize_t(c);
    Py_DECREF(c);
    if (*count == -1 && PyErr_Occurred()) { Py_DECREF(d); return -1; }
    if (*count < 0 || *count > 0xffffffffLL) goto bad;
    if (PyBytes_CheckExact(d)) {
        *buf = PyBytes_AS_STRING(d);
        *len = PyBytes_GET_SIZE(d);
    } else if (PyMemoryView_Check(d)) {
        /* PyBUF_SIMPLE: flat bytes only; a released view raises ValueError. The pointer
         * stays valid after the release below: the run holds the view, the view its object */
        Py_buffer view;
        if (PyObject_GetBuffer(d, &view, PyBUF_SIMPLE) < 0) { Py_DECREF(d); return -1; }
        *buf = (const char *)view.buf;
        *len = view.len;
        PyBuffer_Release(&view);
    } else {
        goto bad;
    }
    Py_DECREF(d);       /* borrowed from here on: the run keeps its data */
    return 0;
bad:
    Py_DECREF(d);
    PyErr_SetString(PyExc_TypeError, "records: a list of records or a run");
    return -1;
}

/* The end of the record at `pos` of b[0:n] after checking its layout (what unpack_record_at
 * checks, without making its fields); -1 with an exception set. */
static Py_ssize_t check_record_at(const unsigned char *b, Py_ssize_t n, Py_ssize_t pos) {
    if (pos < 0 || pos + 4 + RECORD_FIXED > n) goto short_;
    uint32_t rec_len = get_u32(b + pos);
    Py_ssize_t end = pos + 4 + (Py_ssize_t)rec_len;
    if (rec_len < RECORD_FIXED || end > n) goto short_;
    const unsigned char *p = b + pos + 4 + 8 + 1;
    unsigned int ex_len = *p++;
    if (p + ex_len + 1 > b + end) goto bad;
    p += ex_len;
    unsigned int rk_len = *p++;
    if (p + rk_len + 4 > b + end) goto bad;
    p += rk_len;
    uint32_t props_len = get_u32(p); p += 4;
    if ((Py_ssize_t)props_len + 4 > (b + end) - p) goto bad;
    p += props_len;
    uint32_t body_len = get_u32(p); p += 4;
    if ((Py_ssize_t)body_len != (b + end) - p) goto bad;
    return end;
bad:
    PyErr_SetString(PyExc_ValueError, "record length does not match its fields");
    return -1;
short_:
    PyErr_SetString(PyExc_ValueError, "truncated record");
    return -1;
}

/* A record's properties or body as a buffer: a bytes object's own storage (no buffer
 * taken: the usual case, one pair of calls less per field and record on a ring crossing),
 * or any other buffer (a memoryview, a bytearray) taken with PyObject_GetBuffer. Give it
 * back with release_view. */
static int field_view(PyObject *v, Py_buffer *view) {
    if (PyBytes_CheckExact(v)) {
        view->obj = NULL;
        view->buf = PyBytes_AS_STRING(v);
        view->len = PyBytes_GET_SIZE(v);
        return 0;
    }
    return PyObject_GetBuffer(v, view, PyBUF_SIMPLE);
}

static void release_view(Py_buffer *view) {
    if (view->obj)
        PyBuffer_Release(view);
}

/* Bytes record `rec` (a tuple of six) takes in the log layout, its rec_len u32 included;
 * -1 with an exception set. */
static Py_ssize_t record_bytes(PyObject *rec) {
    if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != 6) {
        PyErr_SetString(PyExc_TypeError, "a record is a tuple of six");
        return -1;
    }
    Py_ssize_t ex_len, rk_len;
    if (!PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(rec, 1), &ex_len)) return -1;
    if (!PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(rec, 2), &rk_len)) return -1;
    if (ex_len > 255 || rk_len > 255) {
        PyErr_SetString(PyExc_ValueError,
                        "exchange and routing key are AMQP shortstrs: at most 255 bytes");
        return -1;
    }
    Py_ssize_t lens[2];
    for (int k = 0; k < 2; k++) {
        PyObject *v = PyTuple_GET_ITEM(rec, 3 + k);
        if (PyBytes_CheckExact(v)) {        /* the usual case: no buffer to take and release */
            lens[k] = PyBytes_GET_SIZE(v);
        } else {
            Py_buffer b;
            if (PyObject_GetBuffer(v, &b, PyBUF_SIMPLE) < 0) return -1;
            lens[k] = b.len;
            PyBuffer_Release(&b);
        }
        if (lens[k] > 0xffffffffLL) {
            PyErr_SetString(PyExc_ValueError, "record field over 4 GiB");
            return -1;
        }
    }
    uint64_t rec_len = RECORD_FIXED + ex_len + rk_len + lens[0] + lens[1];
    if (rec_len > 0xffffffffULL) {
        PyErr_SetString(PyExc_ValueError, "record over 4 GiB");
        return -1;
    }
    return 4 + (Py_ssize_t)rec_len;
}

/* Writes record `rec` at p, which has `avail` bytes: the bytes written, or -1 with an
 * exception set if it does not fit (a record changed since it was sized) or has a bad field. */
static Py_ssize_t put_record(unsigned char *p, PyObject *rec, Py_ssize_t avail) {
    if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != 6) {
        PyErr_SetString(PyExc_TypeError, "a record is a tuple of six");
        return -1;
    }
    Py_ssize_t ex_len, rk_len;
    const char *ex = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(rec, 1), &ex_len);
    if (!ex) return -1;
    const char *rk = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(rec, 2), &rk_len);
    if (!rk) return -1;
    if (ex_len > 255 || rk_len > 255) {
        PyErr_SetString(PyExc_ValueError,
                        "exchange and routing key are AMQP shortstrs: at most 255 bytes");
        return -1;
    }
    unsigned long long ts = as_u64(PyTuple_GET_ITEM(rec, 0));
    if (ts == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    unsigned long flags = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(rec, 5));
    if (flags == (unsigned long)-1 && PyErr_Occurred()) return -1;
    Py_buffer props, body;
    if (field_view(PyTuple_GET_ITEM(rec, 3), &props) < 0) return -1;
    if (field_view(PyTuple_GET_ITEM(rec, 4), &body) < 0) {
        release_view(&props);
        return -1;
    }
    Py_ssize_t rec_len = RECORD_FIXED + ex_len + rk_len + props.len + body.len;
    Py_ssize_t out = -1;
    if (4 + rec_len > avail) {
        PyErr_SetString(PyExc_ValueError, "message changed after it was sized");
        goto done;
    }
    write_record(p, (uint32_t)rec_len, ts, flags, ex, ex_len, rk, rk_len, &props, &body);
    out = 4 + rec_len;
done:
    release_view(&props);
    release_view(&body);
    return out;
}

static int hot_size(PyObject *msg, const char *fmt, Py_ssize_t prefix_len, Py_ssize_t *out);
static int hot_pack(unsigned char *p, Py_ssize_t size, PyObject *msg, unsigned int type_id,
                    const char *fmt, const Py_buffer *prefix);

static PyObject *pack_message(PyObject *self, PyObject *args) {
    Py_buffer prefix;
    unsigned int type_id;
    const char *fmt;
    PyObject *msg;
    if (!PyArg_ParseTuple(args, "y*IsO!", &prefix, &type_id, &fmt, &PyTuple_Type, &msg))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t size;
    if (hot_size(msg, fmt, prefix.len, &size) == 0) {
        out = PyBytes_FromStringAndSize(NULL, size);
        if (out && hot_pack((unsigned char *)PyBytes_AS_STRING(out), size, msg, type_id, fmt,
                            &prefix) < 0)
            Py_CLEAR(out);
    }
    PyBuffer_Release(&prefix);
    return out;
}

static PyObject *new_tuple_of(PyTypeObject *cls, Py_ssize_t n) {
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "not a tuple type");
        return NULL;
    }
    return cls->tp_alloc(cls, n);
}

/* The record at `pos` of b[0:n] as an `rcls`; *end_out gets its end. */
static PyObject *record_at(const unsigned char *b, Py_ssize_t n, Py_ssize_t pos,
                           PyTypeObject *rcls, Py_ssize_t *end_out, field_memo *memo) {
    PyObject *fields[6];
    if (unpack_record_at(b, n, pos, fields, end_out, memo) < 0)
        return NULL;
    PyObject *rec = new_tuple_of(rcls, 6);
    if (!rec) {
        for (int i = 0; i < 6; i++) Py_DECREF(fields[i]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 6; i++)
        PyTuple_SET_ITEM(rec, i, fields[i]);
    return rec;
}

/* The hot message at `pos` of b[0:n] (its type byte first), as an `mcls` whose last item is
 * an `rcls` (or a list of them: a format ending in '*'; or, for a format ending in '#', an
 * `rcls` made as rcls(data, count) of the records' bytes, a run: no object per record);
 * *end_out gets the end of its last record. */
static PyObject *unpack_message_at(const unsigned char *b, Py_ssize_t n, Py_ssize_t pos,
                                   const char *fmt, PyTypeObject *mcls, PyTypeObject *rcls,
                                   Py_ssize_t *end_out, field_memo *memo, int borrow) {
    int is_list;
    Py_ssize_t nfixed = fmt_fixed(fmt, &is_list);
    Py_ssize_t hsize = 1 + fmt_size(fmt);
    if (pos < 0 || pos + hsize + (is_list ? 4 : 0) > n) {
        PyErr_SetString(PyExc_ValueError, "truncated message");
        return NULL;
    }
    PyObject *last;
    if (is_list) {
        Py_ssize_t at = pos + hsize;
        uint32_t count = get_u32(b + at);
        at += 4;
        if ((uint64_t)count * (4 + RECORD_FIXED) > (uint64_t)(n - at)) {
            PyErr_SetString(PyExc_ValueError, "truncated record");
            return NULL;
        }
        if (fmt_is_run(fmt)) {
            Py_ssize_t start = at;
            for (uint32_t i = 0; i < count; i++) {
                at = check_record_at(b, n, at);
                if (at < 0) return NULL;
            }
            PyObject *args[2];
            /* borrow: a read-only memoryview of the records where they lie, no copy; it
               has no owner, so the caller releases it before the memory goes (the ring
               link: links/ring.py, "Deliveries framed where they lie") */
            args[0] = borrow
                ? PyMemoryView_FromMemory((char *)b + start, at - start, PyBUF_READ)
                : PyBytes_FromStringAndSize((const char *)b + start, at - start);
            if (!args[0]) return NULL;
            args[1] = PyLong_FromUnsignedLong(count);
            if (!args[1]) { Py_DECREF(args[0]); return NULL; }
            last = PyObject_Vectorcall((PyObject *)rcls, args, 2, NULL);
            Py_DECREF(args[0]);
            Py_DECREF(args[1]);
            if (!last) return NULL;
            *end_out = at;
            goto fixed;
        }
        last = PyList_New(count);
        if (!last) return NULL;
        for (uint32_t i = 0; i < count; i++) {
            PyObject *rec = record_at(b, n, at, rcls, &at, memo);
            if (!rec) { Py_DECREF(last); return NULL; }
            PyList_SET_ITEM(last, i, rec);
        }
        *end_out = at;
    } else {
        last = record_at(b, n, pos + hsize, rcls, end_out, memo);
        if (!last) return NULL;
    }
fixed:;
    PyObject *msg = new_tuple_of(mcls, nfixed + 1);
    if (!msg) {
        Py_DECREF(last);
        return NULL;
    }
    const unsigned char *p = b + pos + 1;
    for (Py_ssize_t i = 0; i < nfixed; i++) {
        PyObject *v;
        if (fmt[i] == 'Q') { v = PyLong_FromUnsignedLongLong(get_u64(p)); p += 8; }
        else if (fmt[i] == 'I') { v = PyLong_FromUnsignedLong(get_u32(p)); p += 4; }
        else if (fmt[i] == '?') { v = PyBool_FromLong(*p++); }
        else { v = PyLong_FromUnsignedLong(*p++); }
        if (!v) {
            Py_DECREF(last);
            Py_DECREF(msg);     /* its unset items are NULL: tuple dealloc skips them */
            return NULL;
        }
        PyTuple_SET_ITEM(msg, i, v);
    }
    PyTuple_SET_ITEM(msg, nfixed, last);
    return msg;
}

static PyObject *unpack_message(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, end;
    const char *fmt;
    PyTypeObject *mcls, *rcls;
    if (!PyArg_ParseTuple(args, "y*nsO!O!", &buf, &pos, &fmt, &PyType_Type, &mcls,
                          &PyType_Type, &rcls))
        return NULL;
    PyObject *msg = unpack_message_at((const unsigned char *)buf.buf, buf.len, pos, fmt, mcls,
                                      rcls, &end, NULL, 0);
    PyBuffer_Release(&buf);
    return msg;
}

/* pack_records(records, separate_body) -> ([b"", part, ...], size, first_ts, max_ts)
 * The per-record loop of record.encode_batch_parts (its reference, pack_records_py): the
 * records' bytes as parts, small fields and bodies joined, each body of at least
 * separate_body bytes its own part (the caller's object, uncopied). Part 0 is left for the
 * batch header; size counts the bytes after it. */
static PyObject *pack_records(PyObject *self, PyObject *args) {
    PyObject *records;
    Py_ssize_t separate;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &records, &separate))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(records);
    if (count == 0) {
        PyErr_SetString(PyExc_IndexError, "no records");
        return NULL;
    }
    PyObject *parts = PyList_New(0), *empty = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *result = NULL, *chunk = NULL;
    if (parts == NULL || empty == NULL || PyList_Append(parts, empty) < 0)
        goto done;
    unsigned long long first_ts = 0, max_ts = 0;
    Py_ssize_t size = 0;
    Py_ssize_t start = 0;               /* first record not yet in a part */
    /* two passes per run of records: measure up to the next separate body, then copy */
    while (start < count) {
        Py_ssize_t run = 0, stop = start;
        int separate_after = 0;
        for (; stop < count; stop++) {
            PyObject *r = PyList_GET_ITEM(records, stop);
            if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) < 6) {
                PyErr_SetString(PyExc_TypeError, "a record is a 6-tuple");
                goto done;
            }
            Py_ssize_t ex_len, rk_len;
            if (PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(r, 1), &ex_len) == NULL
                || PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(r, 2), &rk_len) == NULL)
                goto done;
            if (ex_len > 255 || rk_len > 255) {
                PyErr_SetString(PyExc_ValueError,
                                "exchange and routing key are AMQP shortstrs: at most 255 bytes");
                goto done;
            }
            PyObject *props = PyTuple_GET_ITEM(r, 3), *body = PyTuple_GET_ITEM(r, 4);
            if (!PyBytes_Check(props) || !PyBytes_Check(body)) {
                PyErr_SetString(PyExc_TypeError, "record properties and body are bytes");
                goto done;
            }
            unsigned long long ts = as_u64(PyTuple_GET_ITEM(r, 0));
            if (ts == (unsigned long long)-1 && PyErr_Occurred())
                goto done;
            unsigned long flags = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(r, 5));
            if (flags == (unsigned long)-1 && PyErr_Occurred())
                goto done;
            if (flags > 255) {
                PyErr_SetString(PyExc_ValueError, "record flags are one byte");
                goto done;
            }
            if (stop == 0)
                first_ts = max_ts = ts;
            if (ts > max_ts)
                max_ts = ts;
            Py_ssize_t blen = PyBytes_GET_SIZE(body);
            uint64_t rec_len = RECORD_FIXED + ex_len + rk_len + PyBytes_GET_SIZE(props) + blen;
            if (rec_len > 0xffffffffULL) {
                PyErr_SetString(PyExc_ValueError, "record over 4 GiB");
                goto done;
            }
            size += 4 + (Py_ssize_t)rec_len;
            if (blen >= separate) {
                run += 4 + (Py_ssize_t)rec_len - blen;
                separate_after = 1;
                stop++;
                break;
            }
            run += 4 + (Py_ssize_t)rec_len;
        }
        chunk = PyBytes_FromStringAndSize(NULL, run);
        if (chunk == NULL)
            goto done;
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(chunk);
        PyObject *last_body = NULL;
        for (Py_ssize_t i = start; i < stop; i++) {
            PyObject *r = PyList_GET_ITEM(records, i);
            Py_ssize_t ex_len, rk_len;
            const char *ex = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(r, 1), &ex_len);
            const char *rk = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(r, 2), &rk_len);
            PyObject *props = PyTuple_GET_ITEM(r, 3), *body = PyTuple_GET_ITEM(r, 4);
            Py_ssize_t plen = PyBytes_GET_SIZE(props), blen = PyBytes_GET_SIZE(body);
            put_u32(p, (uint32_t)(RECORD_FIXED + ex_len + rk_len + plen + blen));
            put_u64(p + 4, as_u64(PyTuple_GET_ITEM(r, 0)));
            p[12] = (unsigned char)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(r, 5));
            p[13] = (unsigned char)ex_len;
            p += 14;
            memcpy(p, ex, ex_len); p += ex_len;
            *p++ = (unsigned char)rk_len;
            memcpy(p, rk, rk_len); p += rk_len;
            put_u32(p, (uint32_t)plen); p += 4;
            memcpy(p, PyBytes_AS_STRING(props), plen); p += plen;
            put_u32(p, (uint32_t)blen); p += 4;
            if (separate_after && i == stop - 1) {
                last_body = body;
            } else {
                memcpy(p, PyBytes_AS_STRING(body), blen); p += blen;
            }
        }
        if (PyList_Append(parts, chunk) < 0)
            goto done;
        Py_CLEAR(chunk);
        if (last_body != NULL && PyList_Append(parts, last_body) < 0)
            goto done;
        start = stop;
    }
    result = Py_BuildValue("(OnKK)", parts, size, first_ts, max_ts);
done:
    Py_XDECREF(chunk);
    Py_XDECREF(parts);
    Py_XDECREF(empty);
    return result;
}

/* Batches of messages for the ring link (amqpbroker/links/ring.py), one call per batch.
 *
 * pack_messages(msgs, hot, fallback, prefix, limit) -> (data, lens, count)
 *     Encodes msgs[0:count] back to back into one bytes object `data`; `lens` holds their
 *     lengths as native uint32 (what ring_push_many takes). A message whose class is in
 *     `hot` ({class: (type_id, fmt)}: the contract's record-carrying messages) is packed
 *     here, as pack_message(prefix, type_id, fmt, msg) would; any other is
 *     `fallback(msg)`, which returns its whole encoding (prefix included). Stops before the
 *     first message longer than `limit` (the caller fragments it): count < len(msgs).
 *     A body is copied once, from its bytes into `data`.
 *
 * size_messages(msgs, hot, fallback, prefix, limit) -> (sized, lens, count)
 * pack_messages_at(sized, buf, offs, n) -> None
 *     pack_messages in two steps, so that the caller can reserve the space in between (a
 *     ring's push_with): the first sizes msgs[0:count] as pack_messages would (`sized` keeps
 *     the messages, their sizes and any fallback encodings), the second writes the first n
 *     of them, each at its offset of the writable `buf` (offs: native uint64; each message
 *     is checked to lie inside buf). A body is copied once, from its bytes into `buf`.
 *
 * unpack_messages(buf, offs, n, hot, record_cls, fallback) -> list
 *     The n records at [offs[2i], offs[2i+1]) of `buf` (offs: native uint64 pairs, as
 *     ring_peek_many writes them; buf: the ring's mapping), decoded without copying them
 *     out first. A record whose first byte is 0 (a whole message) and whose type byte is in
 *     `hot` ({type_id: (fmt, class)}) is unpacked here and must end exactly at its end;
 *     any other is `fallback(bytes of the record)`, whose result is appended unless None
 *     (a fragment of a bigger message). A run's entry is (fmt, class, run class), or
 *     (fmt, class, run class, True) to borrow: the run's data is then a read-only
 *     memoryview of buf's memory, not a copy, valid only until the caller releases it (the
 *     memory is reused after; the view holds no reference to buf). */
typedef struct {
    Py_ssize_t size;          /* bytes this message takes in data */
    PyObject *enc;            /* fallback's bytes (owned), or NULL for a hot message */
    PyObject *entry;          /* (type_id, fmt) of a hot message (borrowed) */
} enc_item;

static int hot_size(PyObject *msg, const char *fmt, Py_ssize_t prefix_len, Py_ssize_t *out) {
    int is_list;
    Py_ssize_t nfixed = fmt_fixed(fmt, &is_list);
    if (!PyTuple_Check(msg) || PyTuple_GET_SIZE(msg) != nfixed + 1 || nfixed > 16) {
        PyErr_SetString(PyExc_ValueError, "message does not match its format");
        return -1;
    }
    PyObject *last = PyTuple_GET_ITEM(msg, nfixed);
    Py_ssize_t size = prefix_len + 1 + fmt_size(fmt);
    if (is_list && !PyList_Check(last) && fmt_is_run(fmt)) {
        const char *data;
        Py_ssize_t len, count;
        if (run_parts(last, &data, &len, &count) < 0) return -1;
        size += 4 + len;
    } else if (is_list) {
        if (!PyList_Check(last) || PyList_GET_SIZE(last) > 0xffffffffLL) {
            PyErr_SetString(PyExc_TypeError, "records: a list of records");
            return -1;
        }
        size += 4;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(last); i++) {
            Py_ssize_t r = record_bytes(PyList_GET_ITEM(last, i));
            if (r < 0) return -1;
            size += r;
        }
    } else {
        Py_ssize_t r = record_bytes(last);
        if (r < 0) return -1;
        size += r;
    }
    *out = size;
    return 0;
}

/* Writes a hot message at p, which has `size` bytes for it (hot_size's answer): nothing is
 * written past p + size, and a message changed since it was sized (a different size) is an
 * error, not a write past the caller's space. -1 on a bad field. */
static int hot_pack(unsigned char *p, Py_ssize_t size, PyObject *msg, unsigned int type_id,
                    const char *fmt, const Py_buffer *prefix) {
    int is_list;
    Py_ssize_t nfixed = fmt_fixed(fmt, &is_list);
    if (!PyTuple_Check(msg) || PyTuple_GET_SIZE(msg) != nfixed + 1 || nfixed > 16) {
        PyErr_SetString(PyExc_ValueError, "message does not match its format");
        return -1;
    }
    PyObject *last = PyTuple_GET_ITEM(msg, nfixed);
    unsigned char *end = p + size;
    if (prefix->len + 1 + fmt_size(fmt) + (is_list ? 4 : 0) > size) {
        PyErr_SetString(PyExc_ValueError, "message changed after it was sized");
        return -1;
    }
    memcpy(p, prefix->buf, prefix->len); p += prefix->len;
    *p++ = (unsigned char)type_id;
    p = put_fixed(p, msg, fmt, nfixed);
    if (!p) return -1;
    if (is_list && !PyList_Check(last) && fmt_is_run(fmt)) {
        const char *data;
        Py_ssize_t len, count;
        if (run_parts(last, &data, &len, &count) < 0) return -1;
        if (4 + len > end - p) {
            PyErr_SetString(PyExc_ValueError, "message changed after it was sized");
            return -1;
        }
        put_u32(p, (uint32_t)count); p += 4;
        memcpy(p, data, len);
        p += len;
    } else if (is_list) {
        if (!PyList_Check(last)) {
            PyErr_SetString(PyExc_TypeError, "records: a list of records");
            return -1;
        }
        Py_ssize_t count = PyList_GET_SIZE(last);
        put_u32(p, (uint32_t)count); p += 4;
        for (Py_ssize_t i = 0; i < count; i++) {
            Py_ssize_t w = put_record(p, PyList_GET_ITEM(last, i), end - p);
            if (w < 0) return -1;
            p += w;
        }
    } else {
        Py_ssize_t w = put_record(p, last, end - p);
        if (w < 0) return -1;
        p += w;
    }
    if (p != end) {
        PyErr_SetString(PyExc_ValueError, "message changed after it was sized");
        return -1;
    }
    return 0;
}

/* The sizing pass shared by pack_messages and size_messages: items[i] for msgs[0:*count]
 * (stops before the first longer than limit), their sum in *total. -1 with an exception. */
static int size_items(PyObject *msgs, PyObject *hot, PyObject *fallback,
                      const Py_buffer *prefix, Py_ssize_t limit, enc_item *items,
                      Py_ssize_t *count, Py_ssize_t *total) {
    Py_ssize_t n = PyList_GET_SIZE(msgs), i = 0, sum = 0;
    for (; i < n; i++) {
        PyObject *msg = PyList_GET_ITEM(msgs, i);
        enc_item *it = &items[i];
        PyObject *entry = PyDict_GetItemWithError(hot, (PyObject *)Py_TYPE(msg));
        if (entry) {
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 ||
                !PyUnicode_Check(PyTuple_GET_ITEM(entry, 1))) {
                PyErr_SetString(PyExc_TypeError, "hot: {class: (type_id, fmt)}");
                return -1;
            }
            const char *fmt = PyUnicode_AsUTF8(PyTuple_GET_ITEM(entry, 1));
            if (!fmt || hot_size(msg, fmt, prefix->len, &it->size) < 0) return -1;
            it->entry = entry;
        } else {
            if (PyErr_Occurred()) return -1;
            it->enc = PyObject_CallOneArg(fallback, msg);
            if (!it->enc) return -1;
            if (!PyBytes_Check(it->enc)) {
                PyErr_SetString(PyExc_TypeError, "fallback must return bytes");
                return -1;
            }
            it->size = PyBytes_GET_SIZE(it->enc);
        }
        if (it->size > limit || it->size > 0xffffffffLL)
            break;
        sum += it->size;
    }
    *count = i;
    *total = sum;
    return 0;
}

/* The writing pass: msgs[i] (sized as items[i]) at dest[i]. */
static int pack_item(unsigned char *dest, const enc_item *it, PyObject *msg,
                     const Py_buffer *prefix) {
    if (it->enc) {
        memcpy(dest, PyBytes_AS_STRING(it->enc), it->size);
        return 0;
    }
    unsigned long type_id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(it->entry, 0));
    if (type_id == (unsigned long)-1 && PyErr_Occurred()) return -1;
    const char *fmt = PyUnicode_AsUTF8(PyTuple_GET_ITEM(it->entry, 1));
    if (!fmt) return -1;
    return hot_pack(dest, it->size, msg, (unsigned int)type_id, fmt, prefix);
}

static void free_items(enc_item *items, Py_ssize_t n) {
    if (!items) return;
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i].enc);
    PyMem_Free(items);
}

static PyObject *pack_messages(PyObject *self, PyObject *args) {
    PyObject *msgs, *hot, *fallback;
    Py_buffer prefix;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!O!Oy*n", &PyList_Type, &msgs, &PyDict_Type, &hot,
                          &fallback, &prefix, &limit))
        return NULL;
    PyObject *out = NULL, *data = NULL, *lens = NULL;
    Py_ssize_t n = PyList_GET_SIZE(msgs), count = 0, total = 0;
    enc_item *items = PyMem_Calloc(n ? n : 1, sizeof(enc_item));
    if (!items) { PyErr_NoMemory(); goto done; }
    if (size_items(msgs, hot, fallback, &prefix, limit, items, &count, &total) < 0)
        goto done;
    data = PyBytes_FromStringAndSize(NULL, total);
    lens = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(uint32_t));
    if (!data || !lens) goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(data);
    uint32_t *lp = (uint32_t *)PyBytes_AS_STRING(lens);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (pack_item(p, &items[i], PyList_GET_ITEM(msgs, i), &prefix) < 0)
            goto done;
        p += items[i].size;
        lp[i] = (uint32_t)items[i].size;
    }
    out = Py_BuildValue("(OOn)", data, lens, count);
done:
    free_items(items, n);
    Py_XDECREF(data);
    Py_XDECREF(lens);
    PyBuffer_Release(&prefix);
    return out;
}

/* A packing of msgs sized but not yet written (size_messages -> pack_messages_at). */
typedef struct {
    PyObject_HEAD
    PyObject *msgs;           /* the list sized (owned) */
    Py_buffer prefix;
    enc_item *items;
    Py_ssize_t n, count;
    PyObject *lens;           /* bytes: count native uint32 (owned) */
} Sized;

static void sized_dealloc(Sized *s) {
    free_items(s->items, s->n);
    if (s->prefix.obj) PyBuffer_Release(&s->prefix);
    Py_XDECREF(s->msgs);
    Py_XDECREF(s->lens);
    PyObject_Free(s);
}

static PyTypeObject SizedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_record.Sized",
    .tp_basicsize = sizeof(Sized),
    .tp_dealloc = (destructor)sized_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "messages sized by size_messages, to be written by pack_messages_at",
};

static PyObject *size_messages(PyObject *self, PyObject *args) {
    PyObject *msgs, *hot, *fallback;
    Py_buffer prefix;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!O!Oy*n", &PyList_Type, &msgs, &PyDict_Type, &hot,
                          &fallback, &prefix, &limit))
        return NULL;
    Sized *s = PyObject_New(Sized, &SizedType);
    if (!s) { PyBuffer_Release(&prefix); return NULL; }
    s->prefix = prefix;
    Py_INCREF(msgs);
    s->msgs = msgs;
    s->lens = NULL;
    s->n = PyList_GET_SIZE(msgs);
    s->count = 0;
    s->items = PyMem_Calloc(s->n ? s->n : 1, sizeof(enc_item));
    if (!s->items) { PyErr_NoMemory(); goto fail; }
    Py_ssize_t total;
    if (size_items(msgs, hot, fallback, &prefix, limit, s->items, &s->count, &total) < 0)
        goto fail;
    s->lens = PyBytes_FromStringAndSize(NULL, s->count * (Py_ssize_t)sizeof(uint32_t));
    if (!s->lens) goto fail;
    uint32_t *lp = (uint32_t *)PyBytes_AS_STRING(s->lens);
    for (Py_ssize_t i = 0; i < s->count; i++)
        lp[i] = (uint32_t)s->items[i].size;
    return Py_BuildValue("(NOn)", (PyObject *)s, s->lens, s->count);
fail:
    Py_DECREF(s);
    return NULL;
}

static PyObject *pack_messages_at(PyObject *self, PyObject *args) {
    Sized *s;
    Py_buffer buf, offs;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!w*y*n", &SizedType, &s, &buf, &offs, &n))
        return NULL;
    PyObject *out = NULL;
    if (n < 0 || n > s->count || offs.len < n * (Py_ssize_t)sizeof(uint64_t)) {
        PyErr_SetString(PyExc_ValueError, "more messages than were sized, or than offsets");
        goto done;
    }
    const uint64_t *o = (const uint64_t *)offs.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (o[i] > (uint64_t)buf.len || s->items[i].size > buf.len - (Py_ssize_t)o[i]) {
            PyErr_SetString(PyExc_ValueError, "message outside the buffer");
            goto done;
        }
        if (pack_item((unsigned char *)buf.buf + o[i], &s->items[i],
                      PyList_GET_ITEM(s->msgs, i), &s->prefix) < 0)
            goto done;
    }
    out = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offs);
    return out;
}

static PyObject *unpack_messages(PyObject *self, PyObject *args) {
    Py_buffer buf, offs;
    Py_ssize_t n;
    PyObject *hot, *fallback;
    PyTypeObject *rcls;
    if (!PyArg_ParseTuple(args, "y*y*nO!O!O", &buf, &offs, &n, &PyDict_Type, &hot,
                          &PyType_Type, &rcls, &fallback))
        return NULL;
    PyObject *out = NULL;
    if (n < 0 || offs.len < n * 2 * (Py_ssize_t)sizeof(uint64_t)) {
        PyErr_SetString(PyExc_ValueError, "offs holds fewer than n pairs");
        goto done;
    }
    out = PyList_New(0);
    if (!out) goto done;
    const uint64_t *o = (const uint64_t *)offs.buf;
    const unsigned char *b = (const unsigned char *)buf.buf;
    field_memo memo = {{NULL}};     /* its objects live in `out` for as long as it is used */
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t start = o[2 * i], end = o[2 * i + 1];
        if (start > end || end > (uint64_t)buf.len) {
            PyErr_SetString(PyExc_ValueError, "record outside the buffer");
            goto fail;
        }
        PyObject *msg = NULL;
        PyObject *entry = NULL;
        if (end - start >= 2 && b[start] == 0) {
            PyObject *key = PyLong_FromLong(b[start + 1]);
            if (!key) goto fail;
            entry = PyDict_GetItemWithError(hot, key);
            Py_DECREF(key);
            if (!entry && PyErr_Occurred()) goto fail;
        }
        if (entry) {
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 2 ||
                PyTuple_GET_SIZE(entry) > 4 || !PyType_Check(PyTuple_GET_ITEM(entry, 1)) ||
                (PyTuple_GET_SIZE(entry) >= 3 && !PyType_Check(PyTuple_GET_ITEM(entry, 2)))) {
                PyErr_SetString(PyExc_TypeError,
                                "hot: {type_id: (fmt, class[, run class[, borrow]])}");
                goto fail;
            }
            int borrow = PyTuple_GET_SIZE(entry) == 4
                ? PyObject_IsTrue(PyTuple_GET_ITEM(entry, 3)) : 0;
            if (borrow < 0) goto fail;
            const char *fmt = PyUnicode_AsUTF8(PyTuple_GET_ITEM(entry, 0));
            if (!fmt) goto fail;
            /* a run's records are made by the entry's run class, not record_cls */
            PyTypeObject *last_cls = PyTuple_GET_SIZE(entry) >= 3
                ? (PyTypeObject *)PyTuple_GET_ITEM(entry, 2) : rcls;
            if (fmt_is_run(fmt) && last_cls == rcls) {
                PyErr_SetString(PyExc_TypeError, "a run's entry names its run class");
                goto fail;
            }
            Py_ssize_t rec_end;
            msg = unpack_message_at(b, (Py_ssize_t)end, (Py_ssize_t)start + 1, fmt,
                                    (PyTypeObject *)PyTuple_GET_ITEM(entry, 1), last_cls,
                                    &rec_end, &memo, borrow);
            if (!msg) goto fail;
            if (rec_end != (Py_ssize_t)end) {
                Py_DECREF(msg);
                PyErr_SetString(PyExc_ValueError, "message shorter than its ring record");
                goto fail;
            }
        } else {
            PyObject *raw = PyBytes_FromStringAndSize((const char *)b + start,
                                                      (Py_ssize_t)(end - start));
            if (!raw) goto fail;
            msg = PyObject_CallOneArg(fallback, raw);
            Py_DECREF(raw);
            if (!msg) goto fail;
            if (msg == Py_None) { Py_DECREF(msg); continue; }
        }
        int rc = PyList_Append(out, msg);
        Py_DECREF(msg);
        if (rc < 0) goto fail;
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offs);
    return out;
}

/* scan_run(data, count, light_below) -> (starts, sizes, bodies, light, first_persistent,
 *                                          expiring, first_ts, max_ts, max_body)
 * What a store needs to keep a run of `count` records (a ``Pubs``'s, in the log's layout,
 * back to back: `data`) as the bytes it came in, checked as unpack_record checks a record:
 *   starts  (count + 1) native uint32: where each record starts, then the run's end;
 *   sizes   count native uint32: each record's body length;
 *   bodies  their sum; light: how many are shorter than `light_below`;
 *   first_persistent  the index of the first with flags bit 0 (delivery mode 2), -1 if none;
 *   expiring  whether any has the expiration property (0x01 of its first properties byte);
 *   first_ts, max_ts  the first record's timestamp and the largest (0, 0 for no record);
 *   max_body  the largest body.
 * A truncated record, or bytes after the last, is refused (ValueError).
 * Reference: record.scan_run_py. */
static PyObject *scan_run(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t count, light_below;
    if (!PyArg_ParseTuple(args, "y*nn", &buf, &count, &light_below))
        return NULL;
    PyObject *out = NULL, *starts = NULL, *sizes = NULL;
    if (count < 0 || buf.len > 0xffffffffLL) {
        PyErr_SetString(PyExc_ValueError, "a run is a count >= 0 of records under 4 GiB");
        goto done;
    }
    if ((uint64_t)count * (4 + RECORD_FIXED) > (uint64_t)buf.len) {
        PyErr_SetString(PyExc_ValueError, "truncated record");
        goto done;
    }
    starts = PyBytes_FromStringAndSize(NULL, (count + 1) * (Py_ssize_t)sizeof(uint32_t));
    sizes = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(uint32_t));
    if (!starts || !sizes)
        goto done;
    uint32_t *sp = (uint32_t *)PyBytes_AS_STRING(starts);
    uint32_t *zp = (uint32_t *)PyBytes_AS_STRING(sizes);
    const unsigned char *b = (const unsigned char *)buf.buf;
    Py_ssize_t pos = 0, light = 0, first_persistent = -1;
    unsigned long long bodies = 0, first_ts = 0, max_ts = 0;
    uint32_t max_body = 0;
    int expiring = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t end = check_record_at(b, buf.len, pos);
        if (end < 0)
            goto done;
        const unsigned char *p = b + pos + 4;
        uint64_t ts = get_u64(p);
        unsigned int flags = p[8];
        const unsigned char *q = p + 10 + p[9];          /* the routing key's length */
        q += 1 + *q;                                      /* the properties' length */
        uint32_t props_len = get_u32(q);
        if (props_len && (q[4] & 1))
            expiring = 1;
        uint32_t body_len = get_u32(q + 4 + props_len);
        if (i == 0)
            first_ts = max_ts = ts;
        else if (ts > max_ts)
            max_ts = ts;
        if ((flags & 1) && first_persistent < 0)
            first_persistent = i;
        if ((Py_ssize_t)body_len < light_below)
            light++;
        if (body_len > max_body)
            max_body = body_len;
        bodies += body_len;
        sp[i] = (uint32_t)pos;
        zp[i] = body_len;
        pos = end;
    }
    if (pos != buf.len) {
        PyErr_SetString(PyExc_ValueError, "bytes after the run's last record");
        goto done;
    }
    sp[count] = (uint32_t)pos;
    out = Py_BuildValue("(OOKnnNKKk)", starts, sizes, bodies, light, first_persistent,
                        PyBool_FromLong(expiring), first_ts, max_ts, (unsigned long)max_body);
done:
    Py_XDECREF(starts);
    Py_XDECREF(sizes);
    PyBuffer_Release(&buf);
    return out;
}

/* A record of a run with its body left out (worker/store.py, ``StoredRun.bodyless``): the
 * k-th record of ``data`` (``starts`` and ``sizes`` as scan_run made them), its length
 * prefix less the body, the same fields, an empty body. */
static PyObject *bodyless_at(PyObject *self, PyObject *args) {
    Py_buffer data, starts, sizes;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "y*y*y*n", &data, &starts, &sizes, &k))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = sizes.len / (Py_ssize_t)sizeof(uint32_t);
    if (k < 0 || k >= n || starts.len < (k + 2) * (Py_ssize_t)sizeof(uint32_t)) {
        PyErr_SetString(PyExc_IndexError, "no such record in the run");
        goto done;
    }
    uint32_t start, end, size;
    memcpy(&start, (const char *)starts.buf + k * sizeof(uint32_t), sizeof start);
    memcpy(&end, (const char *)starts.buf + (k + 1) * sizeof(uint32_t), sizeof end);
    memcpy(&size, (const char *)sizes.buf + k * sizeof(uint32_t), sizeof size);
    if (end > (uint64_t)data.len || start > end || (uint64_t)end - start < 8 + (uint64_t)size) {
        PyErr_SetString(PyExc_ValueError, "truncated record");
        goto done;
    }
    Py_ssize_t fields = (Py_ssize_t)(end - start) - 8 - (Py_ssize_t)size;
    out = PyBytes_FromStringAndSize(NULL, fields + 8);
    if (!out)
        goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    put_u32(p, (uint32_t)(fields + 4));
    memcpy(p + 4, (const char *)data.buf + start + 4, fields);
    memset(p + 4 + fields, 0, 4);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&sizes);
    return out;
}

/* unpack_records(batch, head_size, record_cls) -> list of record_cls
 * Every record of a complete, CRC-checked batch (its header head_size bytes, the count at
 * byte 12), as record.decode_records_py; fields equal to the previous record's shared
 * (field_memo). ValueError if the records do not fill the batch exactly. */
static PyObject *unpack_records(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t head;
    PyObject *cls;
    if (!PyArg_ParseTuple(args, "y*nO!", &buf, &head, &PyType_Type, &cls))
        return NULL;
    const unsigned char *b = (const unsigned char *)buf.buf;
    Py_ssize_t n = buf.len, pos = head;
    PyObject *out = NULL;
    if (head < 16 || n < head) {
        PyErr_SetString(PyExc_ValueError, "truncated batch");
        goto done;
    }
    uint32_t count = get_u32(b + 12);
    if ((uint64_t)count * (4 + RECORD_FIXED) > (uint64_t)(n - head)) {
        PyErr_SetString(PyExc_ValueError, "truncated record");
        goto done;
    }
    out = PyList_New(count);
    if (!out)
        goto done;
    field_memo memo = {{NULL}};     /* its objects live in `out` for as long as it is used */
    for (uint32_t i = 0; i < count; i++) {
        PyObject *rec = record_at(b, n, pos, (PyTypeObject *)cls, &pos, &memo);
        if (!rec) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, rec);
    }
    if (pos != n) {
        PyErr_SetString(PyExc_ValueError, "batch length does not match its records");
        Py_CLEAR(out);
    }
done:
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef methods[] = {
    {"pack_record", pack_record, METH_VARARGS,
     "pack_record(prefix, timestamp, flags, exchange, routing_key, properties, body) -> bytes"},
    {"unpack_records", unpack_records, METH_VARARGS,
     "unpack_records(batch, head_size, record_cls) -> list of records"},
    {"unpack_record", unpack_record, METH_VARARGS,
     "unpack_record(buf, pos) -> (timestamp, exchange, routing_key, properties, body, flags, end)"},
    {"pack_message", pack_message, METH_VARARGS,
     "pack_message(prefix, type_id, fmt, msg) -> bytes"},
    {"unpack_message", unpack_message, METH_VARARGS,
     "unpack_message(buf, pos, fmt, message_cls, record_cls) -> message"},
    {"pack_records", pack_records, METH_VARARGS,
     "pack_records(records, separate_body) -> ([b'', part, ...], size, first_ts, max_ts)"},
    {"pack_messages", pack_messages, METH_VARARGS,
     "pack_messages(msgs, hot, fallback, prefix, limit) -> (data, lens, count)"},
    {"size_messages", size_messages, METH_VARARGS,
     "size_messages(msgs, hot, fallback, prefix, limit) -> (sized, lens, count)"},
    {"pack_messages_at", pack_messages_at, METH_VARARGS,
     "pack_messages_at(sized, buf, offs, n) -> None: the first n sized messages at offs"},
    {"scan_run", scan_run, METH_VARARGS,
     "scan_run(data, count, light_below) -> (starts, sizes, bodies, light, first_persistent, "
     "expiring, first_ts, max_ts, max_body)"},
    {"bodyless_at", bodyless_at, METH_VARARGS,
     "bodyless_at(data, starts, sizes, k) -> the k-th record of a run without its body"},
    {"unpack_messages", unpack_messages, METH_VARARGS,
     "unpack_messages(buf, offs, n, hot, record_cls, fallback) -> list of messages"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_record", NULL, -1, methods};

PyMODINIT_FUNC PyInit__record(void) {
    if (PyType_Ready(&SizedType) < 0)
        return NULL;
    return PyModule_Create(&module);
}

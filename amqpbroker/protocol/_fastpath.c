/* The per-message loops of protocol/fastpath.py and protocol/fieldtable.py, in C.
 *
 * whole_publish: a basic.publish, its content header and its one body frame, all in the
 * receive buffer, checked and cut out in one pass (in Python: three struct unpacks, a dozen
 * comparisons, five slices and two decodes per message). build_deliver: basic.deliver and its
 * content frames as one bytes object (in Python: nine parts, joined again by writelines).
 * build_deliver_run: the same for a run of deliveries straight from the records' bytes (a
 * ``Dlvs`` as the ring link decoded it), no Python object per delivery. decode_table /
 * decode_array: a field table (a publish's headers) without a Python call per value.
 * split_deliveries: an adapter's AMQP input (delivery_tap.py) cut into the deliveries of its
 * tapped channels, whole, and the frames pika reads. build_publish / build_publishes: an
 * adapter's publishes, as a client writes them. stream_publish: a stream protocol Publish
 * frame's messages (stream_protocol/frames.py).
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
#define RECORD_FIXED (8 + 1 + 1 + 1 + 4 + 4)    /* storage/record.py: a record's fixed bytes */

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

/* The arguments both deliver builders share: channel (0..65535), the first delivery tag and
 * frame_max (room for at least a frame's header and end). -1 with an exception set if bad. */
static int deliver_args(PyObject *ch, PyObject *tg, PyObject *fm, long *channel,
                        unsigned long long *tag, Py_ssize_t *frame_max) {
    *channel = PyLong_AsLong(ch);
    if (*channel == -1 && PyErr_Occurred())
        return -1;
    *tag = PyLong_AsUnsignedLongLong(tg);
    if (*tag == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *frame_max = PyLong_AsSsize_t(fm);
    if (*frame_max == -1 && PyErr_Occurred())
        return -1;
    if (*channel < 0 || *channel > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "channel out of range");
        return -1;
    }
    if (*frame_max < 9) {
        PyErr_SetString(PyExc_ValueError, "frame_max too small");
        return -1;
    }
    return 0;
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
    long channel;
    unsigned long long tag;
    Py_ssize_t frame_max;
    if (deliver_args(args[0], args[2], args[8], &channel, &tag, &frame_max) < 0)
        return NULL;
    int redelivered = PyObject_IsTrue(args[3]);
    if (redelivered < 0)
        return NULL;
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

/* The frames of a run of deliveries are written into one bytes object that grows as needed
 * (a body of copy_below bytes or more ends it: its payload goes out as a slice of the run's
 * records, uncopied, and the next frames start another). */
typedef struct {
    PyObject *out;          /* the list of parts */
    PyObject *cur;          /* the bytes object being written, or NULL */
    Py_ssize_t used, cap;
} parts_writer;

/* Room for `need` more bytes in the current part (`hint`: what the rest may take, to size a
 * new part once); a pointer to where they go, NULL with an exception set. */
static unsigned char *parts_room(parts_writer *w, Py_ssize_t need, Py_ssize_t hint) {
    if (w->cur == NULL) {
        w->cap = need > hint ? need : hint;
        w->cur = PyBytes_FromStringAndSize(NULL, w->cap);
        if (w->cur == NULL) return NULL;
        w->used = 0;
    } else if (w->used + need > w->cap) {
        Py_ssize_t cap = w->cap * 2 > w->used + need ? w->cap * 2 : w->used + need;
        if (_PyBytes_Resize(&w->cur, cap) < 0) return NULL;     /* frees it on failure */
        w->cap = cap;
    }
    return (unsigned char *)PyBytes_AS_STRING(w->cur) + w->used;
}

/* The current part, cut to what was written, appended to the list. */
static int parts_end(parts_writer *w) {
    if (w->cur == NULL) return 0;
    if (w->used < w->cap && _PyBytes_Resize(&w->cur, w->used) < 0) return -1;
    int rc = PyList_Append(w->out, w->cur);
    Py_CLEAR(w->cur);
    return rc;
}

/* build_deliver_run(channel, consumer_tag, first_tag, records, count, frame_max, copy_below)
 *   -> list of parts
 * basic.deliver + content frames for each of the `count` records in `records` (records in
 * the log's layout back to back, storage/record.py, as a RecordRun holds them), delivery
 * tags first_tag, first_tag + 1, ..., none redelivered: the bytes of build_deliver for each
 * record in turn, joined. The frames are one bytes object, except that, if `records` is
 * bytes, the body frames' payloads of a body of copy_below bytes or more are memoryview
 * slices of `records` (not copied: the socket writes them from there). A memoryview (of a
 * ring's memory, borrowed until the call returns: links/ring.py) is never referenced by the
 * result: every body is copied into the frames. A record cut short, or bytes left after the
 * last, is a ValueError. fastpath.build_deliver_run_py is the reference. */
static PyObject *build_deliver_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "build_deliver_run takes 7 arguments");
        return NULL;
    }
    long channel;
    unsigned long long tag;
    Py_ssize_t frame_max;
    if (deliver_args(args[0], args[2], args[5], &channel, &tag, &frame_max) < 0)
        return NULL;
    Py_ssize_t count = PyLong_AsSsize_t(args[4]);
    Py_ssize_t copy_below = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred())
        return NULL;
    if (count < 0) {
        PyErr_SetString(PyExc_ValueError, "negative count");
        return NULL;
    }
    PyObject *records = args[3], *view = NULL;
    if (!PyBytes_Check(records) && !PyMemoryView_Check(records)) {
        PyErr_SetString(PyExc_TypeError, "records must be bytes or a memoryview");
        return NULL;
    }
    Py_buffer rbuf;
    if (PyObject_GetBuffer(records, &rbuf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (!PyBytes_Check(records))
        copy_below = PY_SSIZE_T_MAX;        /* not ours to slice: no part may outlive the call */
    Py_buffer ctag;
    if (PyObject_GetBuffer(args[1], &ctag, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&rbuf);
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)rbuf.buf;
    Py_ssize_t n = rbuf.len, pos = 0;
    parts_writer w = {PyList_New(0), NULL, 0, 0};
    if (w.out == NULL)
        goto fail;
    if (ctag.len > 255) {
        PyErr_SetString(PyExc_ValueError, "shortstr over 255 bytes");
        goto fail;
    }
    Py_ssize_t chunk = frame_max - 8;
    for (Py_ssize_t i = 0; i < count; i++, tag++) {
        /* the record at pos (storage/record.py): rec_len, ts, flags, exchange, routing key,
           properties, body; every length checked against its end */
        if (n - pos < 4 + RECORD_FIXED) goto short_;
        uint32_t rec_len = get_u32(b + pos);
        if (rec_len < RECORD_FIXED || (Py_ssize_t)rec_len > n - pos - 4) goto short_;
        Py_ssize_t end = pos + 4 + (Py_ssize_t)rec_len;
        const unsigned char *p = b + pos + 13;
        Py_ssize_t ex_len = *p++;
        const unsigned char *ex = p;
        if (p + ex_len + 1 > b + end) goto bad;
        p += ex_len;
        Py_ssize_t rk_len = *p++;
        const unsigned char *rk = p;
        if (p + rk_len + 4 > b + end) goto bad;
        p += rk_len;
        Py_ssize_t props_len = get_u32(p); p += 4;
        if (props_len + 4 > (b + end) - p) goto bad;
        const unsigned char *props = p;
        p += props_len;
        Py_ssize_t body_len = get_u32(p); p += 4;
        if (body_len != (b + end) - p) goto bad;
        if (props_len > 0xffffffffLL - 12) {
            PyErr_SetString(PyExc_ValueError, "property list too large");
            goto fail;
        }
        const unsigned char *body = p;
        int big = body_len >= copy_below;
        Py_ssize_t msize = 4 + 1 + ctag.len + 8 + 1 + 1 + ex_len + 1 + rk_len;
        Py_ssize_t nframes = body_len ? (body_len + chunk - 1) / chunk : 0;
        Py_ssize_t need = 8 + msize + 8 + 12 + props_len + (big ? 0 : body_len + 8 * nframes);
        /* what the rest takes at most if its bodies are small (frames over records) */
        Py_ssize_t hint = (n - pos) + (count - i) * (64 + ctag.len);
        unsigned char *o = parts_room(&w, need, hint);
        if (o == NULL) goto fail;
        unsigned char *start = o;
        o[0] = FRAME_METHOD; put_u16(o + 1, (uint16_t)channel); put_u32(o + 3, (uint32_t)msize);
        o[7] = 0; o[8] = 60; o[9] = 0; o[10] = 60;
        o += 11;
        *o++ = (unsigned char)ctag.len;
        memcpy(o, ctag.buf, ctag.len); o += ctag.len;
        put_u64(o, tag); o += 8;
        *o++ = 0;                                           /* redelivered */
        *o++ = (unsigned char)ex_len;
        memcpy(o, ex, ex_len); o += ex_len;
        *o++ = (unsigned char)rk_len;
        memcpy(o, rk, rk_len); o += rk_len;
        *o++ = FRAME_END;
        o[0] = FRAME_HEADER; put_u16(o + 1, (uint16_t)channel);
        put_u32(o + 3, (uint32_t)(12 + props_len));
        o += 7;
        o[0] = 0; o[1] = 60; o[2] = 0; o[3] = 0;
        put_u64(o + 4, (uint64_t)body_len);
        o += 12;
        memcpy(o, props, props_len); o += props_len;
        *o++ = FRAME_END;
        if (!big) {
            for (Py_ssize_t k = 0; k < body_len; k += chunk) {
                Py_ssize_t part = body_len - k < chunk ? body_len - k : chunk;
                o[0] = FRAME_BODY; put_u16(o + 1, (uint16_t)channel);
                put_u32(o + 3, (uint32_t)part);
                o += 7;
                memcpy(o, body + k, part); o += part;
                *o++ = FRAME_END;
            }
            w.used += o - start;
        } else {
            w.used += o - start;
            if (view == NULL && (view = PyMemoryView_FromObject(records)) == NULL) goto fail;
            Py_ssize_t at = body - b;
            for (Py_ssize_t k = 0; k < body_len; k += chunk) {
                Py_ssize_t part = body_len - k < chunk ? body_len - k : chunk;
                o = parts_room(&w, 7, hint);
                if (o == NULL) goto fail;
                o[0] = FRAME_BODY; put_u16(o + 1, (uint16_t)channel);
                put_u32(o + 3, (uint32_t)part);
                w.used += 7;
                if (parts_end(&w) < 0) goto fail;
                PyObject *slice = PySequence_GetSlice(view, at + k, at + k + part);
                if (slice == NULL) goto fail;
                int rc = PyList_Append(w.out, slice);
                Py_DECREF(slice);
                if (rc < 0) goto fail;
                o = parts_room(&w, 1, hint);
                if (o == NULL) goto fail;
                *o = FRAME_END;
                w.used += 1;
            }
        }
        pos = end;
    }
    if (pos != n) {
        PyErr_SetString(PyExc_ValueError, "records left after the run's count");
        goto fail;
    }
    if (parts_end(&w) < 0) goto fail;
    Py_XDECREF(view);
    PyBuffer_Release(&ctag);
    PyBuffer_Release(&rbuf);
    return w.out;
bad:
    PyErr_SetString(PyExc_ValueError, "record length does not match its fields");
    goto fail;
short_:
    PyErr_SetString(PyExc_ValueError, "truncated record");
fail:
    Py_XDECREF(w.cur);
    Py_XDECREF(w.out);
    Py_XDECREF(view);
    PyBuffer_Release(&ctag);
    PyBuffer_Release(&rbuf);
    return NULL;
}

/* ------------------------------------------------------------------ field tables
 * decode_table(buf, pos, end, value_at) -> (dict, stop)
 * decode_array(buf, pos, end, value_at) -> (list, stop)
 * protocol/fieldtable.py's _table_at / _array_at: the table (array) whose u32 length is at
 * pos, within buf[:end]. The integer, boolean, void, long string, table and array values
 * (what clients put in headers) are built here; any other type byte (float, double,
 * decimal, timestamp, byte array, or an unknown one) is handed to value_at(buf, pos, end)
 * -> (value, stop), the Python reference's own _value_at, so each value is exactly what the
 * Python decoder gives, errors included (ValueError with the same words). Nesting goes
 * through Py_EnterRecursiveCall: a deep table raises RecursionError as the Python does. */

static PyObject *table_at(PyObject *buf, const unsigned char *b, Py_ssize_t pos,
                          Py_ssize_t end, PyObject *fallback, Py_ssize_t *stop_out);
static PyObject *array_at(PyObject *buf, const unsigned char *b, Py_ssize_t pos,
                          Py_ssize_t end, PyObject *fallback, Py_ssize_t *stop_out);

static PyObject *exceeds(const char *what) {
    PyErr_SetString(PyExc_ValueError, what);
    return NULL;
}

/* the value whose type byte is at *pos (< end); *pos is moved past it */
static PyObject *value_at(PyObject *buf, const unsigned char *b, Py_ssize_t *pos,
                          Py_ssize_t end, PyObject *fallback) {
    Py_ssize_t p = *pos;
    if (p >= end)
        return exceeds("Field value exceeds table data");
    unsigned char code = b[p++];
    Py_ssize_t width = 0;
    switch (code) {
    case 'b': case 'B': case 't': width = 1; break;
    case 's': case 'u': width = 2; break;
    case 'I': case 'i': width = 4; break;
    case 'l': case 'L': width = 8; break;
    }
    if (width) {
        if (end - p < width)
            return exceeds("Field value exceeds table data");
        const unsigned char *v = b + p;
        *pos = p + width;
        switch (code) {
        case 'b': return PyLong_FromLong((signed char)v[0]);
        case 'B': return PyLong_FromLong(v[0]);
        case 't': return PyBool_FromLong(v[0] != 0);
        case 's': return PyLong_FromLong((int16_t)get_u16(v));
        case 'u': return PyLong_FromLong(get_u16(v));
        case 'I': return PyLong_FromLong((int32_t)get_u32(v));
        case 'i': return PyLong_FromUnsignedLong(get_u32(v));
        default: return PyLong_FromLongLong((int64_t)get_u64(v));
        }
    }
    if (code == 'V') {
        *pos = p;
        Py_RETURN_NONE;
    }
    if (code == 'S') {
        if (end - p < 4)
            return exceeds("Field value exceeds table data");
        uint32_t n = get_u32(b + p);
        if ((uint64_t)(end - p - 4) < n)
            return exceeds("Field value exceeds table data");
        *pos = p + 4 + (Py_ssize_t)n;
        PyObject *text = PyUnicode_DecodeUTF8((const char *)b + p + 4, (Py_ssize_t)n, NULL);
        if (text != NULL || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return text;
        PyErr_Clear();                          /* pamqp's long_str gives bytes then */
        return PyBytes_FromStringAndSize((const char *)b + p + 4, (Py_ssize_t)n);
    }
    if (code == 'x') {                          /* a byte array: pamqp's bytearray */
        if (end - p < 4)
            return exceeds("Field value exceeds table data");
        uint32_t n = get_u32(b + p);
        if ((uint64_t)(end - p - 4) < n)
            return exceeds("Field value exceeds table data");
        *pos = p + 4 + (Py_ssize_t)n;
        return PyByteArray_FromStringAndSize((const char *)b + p + 4, (Py_ssize_t)n);
    }
    if (code == 'F' || code == 'A') {
        Py_ssize_t stop;
        if (Py_EnterRecursiveCall(" while decoding a field table"))
            return NULL;
        PyObject *v = code == 'F' ? table_at(buf, b, p, end, fallback, &stop)
                                  : array_at(buf, b, p, end, fallback, &stop);
        Py_LeaveRecursiveCall();
        if (v != NULL)
            *pos = stop;
        return v;
    }
    /* any other type: the Python reference's _value_at, at the type byte */
    PyObject *res = PyObject_CallFunction(fallback, "Onn", buf, *pos, end);
    if (res == NULL)
        return NULL;
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "value_at must return (value, stop)");
        return NULL;
    }
    Py_ssize_t stop = PyLong_AsSsize_t(PyTuple_GET_ITEM(res, 1));
    if (stop == -1 && PyErr_Occurred()) {
        Py_DECREF(res);
        return NULL;
    }
    PyObject *v = PyTuple_GET_ITEM(res, 0);
    Py_INCREF(v);
    Py_DECREF(res);
    *pos = stop;
    return v;
}

/* the u32 length at pos, checked against end: the position after the compound, or -1 */
static Py_ssize_t compound_stop(const unsigned char *b, Py_ssize_t pos, Py_ssize_t end,
                                const char *what) {
    if (pos < 0 || end - pos < 4) {
        exceeds(what);
        return -1;
    }
    uint32_t n = get_u32(b + pos);
    if ((uint64_t)(end - pos - 4) < n) {
        exceeds(what);
        return -1;
    }
    return pos + 4 + (Py_ssize_t)n;
}

static PyObject *table_at(PyObject *buf, const unsigned char *b, Py_ssize_t pos,
                          Py_ssize_t end, PyObject *fallback, Py_ssize_t *stop_out) {
    const char *what = "Field table length exceeds available data";
    Py_ssize_t stop = compound_stop(b, pos, end, what);
    if (stop < 0)
        return NULL;
    pos += 4;
    PyObject *data = PyDict_New();
    if (data == NULL)
        return NULL;
    while (pos < stop) {
        Py_ssize_t klen = b[pos++];
        if (stop - pos < klen) {
            Py_DECREF(data);
            return exceeds("Field table key length exceeds data");
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)b + pos, klen, NULL);
        if (key == NULL) {
            Py_DECREF(data);
            return NULL;
        }
        pos += klen;
        PyObject *value = value_at(buf, b, &pos, stop, fallback);
        if (value == NULL || PyDict_SetItem(data, key, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(key);
            Py_DECREF(data);
            return NULL;
        }
        Py_DECREF(value);
        Py_DECREF(key);
    }
    *stop_out = stop;
    return data;
}

static PyObject *array_at(PyObject *buf, const unsigned char *b, Py_ssize_t pos,
                          Py_ssize_t end, PyObject *fallback, Py_ssize_t *stop_out) {
    Py_ssize_t stop = compound_stop(b, pos, end, "Field array length exceeds available data");
    if (stop < 0)
        return NULL;
    pos += 4;
    PyObject *data = PyList_New(0);
    if (data == NULL)
        return NULL;
    while (pos < stop) {
        PyObject *value = value_at(buf, b, &pos, stop, fallback);
        if (value == NULL || PyList_Append(data, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(data);
            return NULL;
        }
        Py_DECREF(value);
    }
    *stop_out = stop;
    return data;
}

static PyObject *decode_compound(PyObject *const *args, Py_ssize_t nargs, int table) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "decode_table / decode_array take 4 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (end > view.len)
        end = view.len;             /* as slicing the Python buffer would */
    Py_ssize_t stop = 0;
    PyObject *data = table ? table_at(args[0], view.buf, pos, end, args[3], &stop)
                           : array_at(args[0], view.buf, pos, end, args[3], &stop);
    PyBuffer_Release(&view);
    if (data == NULL)
        return NULL;
    PyObject *out = Py_BuildValue("(Nn)", data, stop);
    return out;
}

static PyObject *decode_table(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return decode_compound(args, nargs, 1);
}

static PyObject *decode_array(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return decode_compound(args, nargs, 0);
}

/* ---------------------------------------------------------------- stream headers
 * with_stream_headers / stream_place: protocol/properties.py's, for a stream delivery to a
 * stream protocol consumer: x-stream-offset and x-stream-timestamp appended to the
 * properties' headers table, and read back where they were put (the last two entries). The
 * splice only: where it would not be the answer (continuation flags, a table holding one of
 * the names already, bytes shorter than their flags say) they return NotImplemented and
 * properties.py does it in Python, so both answer alike on any input
 * (tests/property/test_stream_headers_c.py). */
#define F_CONTENT_TYPE 0x8000
#define F_CONTENT_ENCODING 0x4000
#define F_HEADERS 0x2000
static const char OFFSET_HEAD[] = "\x0fx-stream-offset" "l";       /* 17 bytes */
static const char STAMP_HEAD[] = "\x12x-stream-timestamp" "l";     /* 20 bytes */
#define OFFSET_ENTRY (17 + 8)
#define STAMP_ENTRY (20 + 8)
#define STREAM_ENTRIES (OFFSET_ENTRY + STAMP_ENTRY)

static Py_ssize_t headers_at(const unsigned char *p, Py_ssize_t n, unsigned flags) {
    Py_ssize_t at = 2;
    if (flags & F_CONTENT_TYPE) {
        if (at >= n) return -1;
        at += 1 + p[at];
    }
    if (flags & F_CONTENT_ENCODING) {
        if (at >= n) return -1;
        at += 1 + p[at];
    }
    return at <= n ? at : -1;
}

static int holds(const unsigned char *p, Py_ssize_t n, const char *name, Py_ssize_t m) {
    for (Py_ssize_t i = 0; i + m <= n; i++)
        if (p[i] == (unsigned char)name[0] && memcmp(p + i, name, (size_t)m) == 0) return 1;
    return 0;
}

static void put_i64(unsigned char *q, long long v) {
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) { q[i] = (unsigned char)(u & 0xff); u >>= 8; }
}

static PyObject *with_stream_headers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "with_stream_headers(raw, offset, timestamp)");
        return NULL;
    }
    long long offset = PyLong_AsLongLong(args[1]);
    long long stamp = offset == -1 && PyErr_Occurred() ? 0 : PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) {             /* out of range: Python's struct raises its error */
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = b.buf;
    Py_ssize_t n = b.len, pos;
    PyObject *out = NULL;
    unsigned char entries[STREAM_ENTRIES];
    memcpy(entries, OFFSET_HEAD, 17);
    put_i64(entries + 17, offset);
    memcpy(entries + OFFSET_ENTRY, STAMP_HEAD, 20);
    put_i64(entries + OFFSET_ENTRY + 20, stamp);
    if (n < 2) goto python;
    unsigned flags = get_u16(p);
    if (flags & 1 || (pos = headers_at(p, n, flags)) < 0) goto python;
    if (flags & F_HEADERS) {
        if (pos + 4 > n) goto python;
        uint32_t tn = get_u32(p + pos);
        Py_ssize_t end = pos + 4 + (Py_ssize_t)tn;
        if (end > n || holds(p + pos + 4, tn, OFFSET_HEAD, 16)
                || holds(p + pos + 4, tn, STAMP_HEAD, 19))
            goto python;
        out = PyBytes_FromStringAndSize(NULL, n + STREAM_ENTRIES);
        if (out == NULL) goto done;
        unsigned char *q = (unsigned char *)PyBytes_AS_STRING(out);
        memcpy(q, p, (size_t)pos);
        put_u32(q + pos, tn + STREAM_ENTRIES);
        memcpy(q + pos + 4, p + pos + 4, tn);
        memcpy(q + end, entries, STREAM_ENTRIES);
        memcpy(q + end + STREAM_ENTRIES, p + end, (size_t)(n - end));
    } else {
        out = PyBytes_FromStringAndSize(NULL, n + 4 + STREAM_ENTRIES);
        if (out == NULL) goto done;
        unsigned char *q = (unsigned char *)PyBytes_AS_STRING(out);
        put_u16(q, (uint16_t)(flags | F_HEADERS));
        memcpy(q + 2, p + 2, (size_t)(pos - 2));
        put_u32(q + pos, STREAM_ENTRIES);
        memcpy(q + pos + 4, entries, STREAM_ENTRIES);
        memcpy(q + pos + 4 + STREAM_ENTRIES, p + pos, (size_t)(n - pos));
    }
    goto done;
python:
    out = Py_NewRef(Py_NotImplemented);
done:
    PyBuffer_Release(&b);
    return out;
}

static PyObject *stream_place(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "stream_place(raw)");
        return NULL;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = b.buf;
    Py_ssize_t n = b.len, pos;
    PyObject *out;
    if (n < 6) { out = Py_NewRef(Py_None); goto done; }
    unsigned flags = get_u16(p);
    if (!(flags & F_HEADERS) || flags & 1) { out = Py_NewRef(Py_None); goto done; }
    if ((pos = headers_at(p, n, flags)) < 0) { out = Py_NewRef(Py_NotImplemented); goto done; }
    if (pos + 4 > n) { out = Py_NewRef(Py_None); goto done; }
    Py_ssize_t end = pos + 4 + (Py_ssize_t)get_u32(p + pos);
    Py_ssize_t stamp_at = end - STAMP_ENTRY, offset_at = stamp_at - OFFSET_ENTRY;
    if (offset_at < pos + 4 || end > n || memcmp(p + offset_at, OFFSET_HEAD, 17) != 0
            || memcmp(p + stamp_at, STAMP_HEAD, 20) != 0) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    out = Py_BuildValue("(LLnn)", (long long)get_u64(p + offset_at + 17),
                        (long long)get_u64(p + stamp_at + 20), pos + 4, offset_at);
done:
    PyBuffer_Release(&b);
    return out;
}

/* The bytes of one basic.publish and its content frames (the body split by frame_max - 8),
 * and writing them at p (the end returned). */
static Py_ssize_t publish_size(Py_ssize_t ex, Py_ssize_t rk, Py_ssize_t props, Py_ssize_t body,
                               Py_ssize_t chunk) {
    Py_ssize_t frames = body ? (body + chunk - 1) / chunk : 0;
    return 8 + (4 + 2 + 1 + ex + 1 + rk + 1) + 8 + (12 + props) + 8 * frames + body;
}

static unsigned char *put_publish(unsigned char *p, long channel, const Py_buffer *ex,
                                  const Py_buffer *rk, const Py_buffer *props,
                                  const char *body, Py_ssize_t body_len, Py_ssize_t chunk,
                                  int mandatory) {
    *p++ = FRAME_METHOD;
    put_u16(p, (uint16_t)channel); p += 2;
    put_u32(p, (uint32_t)(4 + 2 + 1 + ex->len + 1 + rk->len + 1)); p += 4;
    put_u16(p, 60); put_u16(p + 2, 40); put_u16(p + 4, 0); p += 6;
    *p++ = (unsigned char)ex->len;
    memcpy(p, ex->buf, ex->len); p += ex->len;
    *p++ = (unsigned char)rk->len;
    memcpy(p, rk->buf, rk->len); p += rk->len;
    *p++ = mandatory ? 1 : 0;
    *p++ = FRAME_END;
    *p++ = FRAME_HEADER;
    put_u16(p, (uint16_t)channel); p += 2;
    put_u32(p, (uint32_t)(12 + props->len)); p += 4;
    put_u16(p, 60); put_u16(p + 2, 0); p += 4;
    put_u64(p, (uint64_t)body_len); p += 8;
    memcpy(p, props->buf, props->len); p += props->len;
    *p++ = FRAME_END;
    for (Py_ssize_t at = 0; at < body_len; at += chunk) {
        Py_ssize_t n = body_len - at < chunk ? body_len - at : chunk;
        *p++ = FRAME_BODY;
        put_u16(p, (uint16_t)channel); p += 2;
        put_u32(p, (uint32_t)n); p += 4;
        memcpy(p, body + at, n); p += n;
        *p++ = FRAME_END;
    }
    return p;
}

/* build_publish(channel, exchange, routing_key, properties, body, frame_max, mandatory)
 *   -> bytes
 * basic.publish and its content frames (the body split by frame_max), joined, as a client
 * sends them: the bytes of b"".join(fastpath.build_publish_py(...)). exchange and
 * routing_key are encoded shortstr bodies (or str, encoded here as UTF-8). With a list of
 * bodies (build_publishes) the publishes of each, one after the other, in one bytes. */
static PyObject *publishes(PyObject *const *args, Py_ssize_t nargs, int many) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "build_publish takes 7 arguments");
        return NULL;
    }
    if (many && !PyList_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "build_publishes takes a list of bodies");
        return NULL;
    }
    long channel = PyLong_AsLong(args[0]);
    Py_ssize_t frame_max = PyLong_AsSsize_t(args[5]);
    int mandatory = PyObject_IsTrue(args[6]);
    if (PyErr_Occurred() || mandatory < 0)
        return NULL;
    if (channel < 0 || channel > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "channel out of range");
        return NULL;
    }
    if (frame_max < 9) {
        PyErr_SetString(PyExc_ValueError, "frame_max too small");
        return NULL;
    }
    Py_buffer ex = {0}, rk = {0}, props = {0}, body = {0};
    PyObject *out = NULL, *bodies = many ? args[4] : NULL;
    Py_ssize_t chunk = frame_max - 8;
    if (text_or_buffer(args[1], &ex) < 0)
        return NULL;
    if (text_or_buffer(args[2], &rk) < 0)
        goto done;
    if (PyObject_GetBuffer(args[3], &props, PyBUF_SIMPLE) < 0)
        goto done;
    if (ex.len > 255 || rk.len > 255) {
        PyErr_SetString(PyExc_ValueError, "bytes must be in range(0, 256)");
        goto done;
    }
    if (!many) {
        if (PyObject_GetBuffer(args[4], &body, PyBUF_SIMPLE) < 0)
            goto done;
        out = PyBytes_FromStringAndSize(NULL, publish_size(ex.len, rk.len, props.len,
                                                           body.len, chunk));
        if (out != NULL)
            put_publish((unsigned char *)PyBytes_AS_STRING(out), channel, &ex, &rk, &props,
                        body.buf, body.len, chunk, mandatory);
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(bodies), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(bodies, i);
        if (!PyBytes_Check(b)) {
            PyErr_SetString(PyExc_TypeError, "a body is not bytes");
            goto done;
        }
        total += publish_size(ex.len, rk.len, props.len, PyBytes_GET_SIZE(b), chunk);
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(bodies, i);
        p = put_publish(p, channel, &ex, &rk, &props, PyBytes_AS_STRING(b),
                        PyBytes_GET_SIZE(b), chunk, mandatory);
    }
done:
    if (ex.obj) PyBuffer_Release(&ex);
    if (rk.obj) PyBuffer_Release(&rk);
    if (props.obj) PyBuffer_Release(&props);
    if (body.obj) PyBuffer_Release(&body);
    return out;
}

static PyObject *build_publish(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return publishes(args, nargs, 0);
}

static PyObject *build_publishes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return publishes(args, nargs, 1);
}

/* stream_publish(body, version) -> None or (publisher id, [(publishing id, data, filter)])
 * A stream protocol Publish frame's body (after key, version) read in one pass, as
 * stream_protocol/frames.parse reads it: None when it holds a sub-entry or anything parse
 * would refuse or read otherwise (its Python path then decides). */
static PyObject *stream_publish(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "stream_publish takes 2 arguments");
        return NULL;
    }
    long version = PyLong_AsLong(args[1]);
    if (version == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len, pos = 5;
    PyObject *list = NULL, *out = NULL;
    if (n < 5)
        goto none;
    int32_t count = (int32_t)get_u32(b + 1);
    if (count < 0 || count > n)
        goto none;
    list = PyList_New(count);
    if (list == NULL)
        goto done;
    for (int32_t i = 0; i < count; i++) {
        if (n - pos < 8)
            goto none;
        uint64_t id = get_u64(b + pos);
        pos += 8;
        if (version == 1 && pos < n && (b[pos] & 0x80))
            goto none;                              /* a sub-entry */
        PyObject *filter = Py_NewRef(Py_None);
        if (version >= 2) {
            if (n - pos < 2) {
                Py_DECREF(filter);
                goto none;
            }
            int16_t flen = (int16_t)get_u16(b + pos);
            pos += 2;
            if (flen >= 0) {
                if (n - pos < flen) {
                    Py_DECREF(filter);
                    goto none;
                }
                Py_DECREF(filter);
                filter = PyUnicode_DecodeUTF8((const char *)b + pos, flen, NULL);
                if (filter == NULL) {
                    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                        goto done;
                    PyErr_Clear();
                    goto none;
                }
                pos += flen;
            }
        }
        if (n - pos < 4) {
            Py_DECREF(filter);
            goto none;
        }
        int32_t dlen = (int32_t)get_u32(b + pos);
        pos += 4;
        PyObject *data;
        if (dlen < 0) {
            data = PyBytes_FromStringAndSize("", 0);
        } else {
            if (n - pos < dlen) {
                Py_DECREF(filter);
                goto none;
            }
            data = PyBytes_FromStringAndSize((const char *)b + pos, dlen);
            pos += dlen;
        }
        PyObject *item = data ? Py_BuildValue("(KNN)", (unsigned long long)id, data, filter)
                              : NULL;
        if (item == NULL) {
            if (data == NULL)
                Py_DECREF(filter);
            goto done;
        }
        PyList_SET_ITEM(list, i, item);
    }
    if (pos != n)
        goto none;
    out = Py_BuildValue("(lN)", (long)b[0], list);
    list = NULL;
    goto done;
none:
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    return out;
}

/* A basic.deliver at pos (its method frame whole, ending at end) with its content header
 * and body frames: all whole, back to back, on its channel. 1 with *delivery (a new
 * reference: cls, a tuple subclass, of the 8 fields of delivery_tap.Delivery) and *after;
 * 0 when it is not that (incomplete, interleaved, malformed, undecodable): the Python path
 * decides; -1 with an exception set. As delivery_tap.whole_delivery_py. */
static int whole_delivery(const unsigned char *b, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t end,
                          unsigned int channel, PyTypeObject *cls, PyObject **delivery,
                          Py_ssize_t *after) {
    Py_ssize_t m = end - 1;                      /* the method payload ends here */
    Py_ssize_t i = pos + 11;                     /* frame head 7, class and method 4 */
    if (i >= m)
        return 0;
    Py_ssize_t ctag = i + 1, ctag_len = b[i];
    i = ctag + ctag_len;
    if (i + 9 > m)
        return 0;
    uint64_t tag = get_u64(b + i);
    int redelivered = b[i + 8] & 1;
    i += 9;
    if (i >= m)
        return 0;
    Py_ssize_t ex = i + 1, ex_len = b[i];
    i = ex + ex_len;
    if (i >= m)
        return 0;
    Py_ssize_t rk = i + 1, rk_len = b[i];
    if (rk + rk_len > m)
        return 0;
    Py_ssize_t h = end;                          /* the content header frame */
    if (n - h < 8 || b[h] != FRAME_HEADER || get_u16(b + h + 1) != channel)
        return 0;
    uint32_t hsize = get_u32(b + h + 3);
    if (hsize < 12 || (uint64_t)(n - h - 8) < hsize)
        return 0;
    Py_ssize_t hend = h + 8 + (Py_ssize_t)hsize;
    if (b[hend - 1] != FRAME_END)
        return 0;
    uint64_t remaining = get_u64(b + h + 11);
    Py_ssize_t q = hend, first = -1, first_len = 0, frames = 0;
    while (remaining > 0) {                      /* the body frames: where, how many */
        if (n - q < 8 || b[q] != FRAME_BODY || get_u16(b + q + 1) != channel)
            return 0;
        uint32_t fsize = get_u32(b + q + 3);
        if ((uint64_t)(n - q - 8) < fsize || fsize > remaining || b[q + 7 + fsize] != FRAME_END)
            return 0;
        if (first < 0) {
            first = q + 7;
            first_len = fsize;
        }
        frames++;
        remaining -= fsize;
        q += 8 + (Py_ssize_t)fsize;
    }
    PyObject *f[8] = {NULL};
    f[1] = PyUnicode_DecodeUTF8((const char *)b + ctag, ctag_len, NULL);
    f[4] = f[1] ? PyUnicode_DecodeUTF8((const char *)b + ex, ex_len, NULL) : NULL;
    f[5] = f[4] ? PyUnicode_DecodeUTF8((const char *)b + rk, rk_len, NULL) : NULL;
    if (f[5] == NULL) {
        Py_XDECREF(f[1]);
        Py_XDECREF(f[4]);
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    f[0] = PyLong_FromUnsignedLong(channel);
    f[2] = PyLong_FromUnsignedLongLong(tag);
    f[3] = Py_NewRef(redelivered ? Py_True : Py_False);
    f[6] = PyBytes_FromStringAndSize((const char *)b + h + 19, hend - 1 - (h + 19));
    if (frames <= 1) {
        f[7] = PyBytes_FromStringAndSize(frames ? (const char *)b + first : "", first_len);
    } else {                                     /* several body frames: joined */
        f[7] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)get_u64(b + h + 11));
        if (f[7] != NULL) {
            char *o = PyBytes_AS_STRING(f[7]);
            for (Py_ssize_t r = hend; r < q;) {
                uint32_t fsize = get_u32(b + r + 3);
                memcpy(o, b + r + 7, fsize);
                o += fsize;
                r += 8 + (Py_ssize_t)fsize;
            }
        }
    }
    PyObject *d = NULL;
    if (f[0] && f[2] && f[6] && f[7])
        d = cls->tp_alloc(cls, 8);
    if (d == NULL) {
        for (int k = 0; k < 8; k++)
            Py_XDECREF(f[k]);
        return -1;
    }
    for (int k = 0; k < 8; k++)
        PyTuple_SET_ITEM(d, k, f[k]);
    *delivery = d;
    *after = q;
    return 1;
}

/* split_deliveries(buf, pos, taps, cls, out) -> the position it stopped at
 * From pos, whole frames: each run of frames that is not a tapped channel's basic.deliver
 * appended to out as one bytes object (for pika), each tapped delivery whose frames are all
 * in buf, back to back, as a cls (delivery_tap.Delivery). Stops at the first frame that is
 * not whole or not well ended, and at a tapped delivery it cannot take whole: the caller's
 * frame-by-frame path goes on from there. As delivery_tap.split_deliveries_py. */
static PyObject *split_deliveries(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyType_Check(args[3]) || !PyType_IsSubtype((PyTypeObject *)args[3],
                                                                  &PyTuple_Type)
        || !PyList_Check(args[4]) || !PyAnySet_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "split_deliveries(buf, pos, taps: set, cls: tuple type, out: list)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len, start = pos;
    PyObject *taps = args[2], *out = args[4];
    PyTypeObject *cls = (PyTypeObject *)args[3];
    int failed = 0;
    if (pos < 0 || pos > n) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return NULL;
    }
    while (n - pos >= 8) {
        unsigned int channel = get_u16(b + pos + 1);
        uint32_t size = get_u32(b + pos + 3);
        if ((uint64_t)(n - pos - 8) < size)
            break;
        Py_ssize_t end = pos + 8 + (Py_ssize_t)size;
        if (b[end - 1] != FRAME_END)
            break;
        if (b[pos] != FRAME_METHOD || size < 4 || b[pos + 7] != 0 || b[pos + 8] != 60
            || b[pos + 9] != 0 || b[pos + 10] != 60) {
            pos = end;                           /* pika's */
            continue;
        }
        PyObject *ch = PyLong_FromUnsignedLong(channel);
        if (ch == NULL) {
            failed = 1;
            break;
        }
        int tapped = PySet_Contains(taps, ch);
        Py_DECREF(ch);
        if (tapped < 0) {
            failed = 1;
            break;
        }
        if (!tapped) {
            pos = end;
            continue;
        }
        PyObject *d = NULL;
        Py_ssize_t after = 0;
        int got = whole_delivery(b, n, pos, end, channel, cls, &d, &after);
        if (got <= 0) {
            failed = got < 0;
            break;
        }
        if (pos > start) {
            PyObject *run = PyBytes_FromStringAndSize((const char *)b + start, pos - start);
            if (run == NULL || PyList_Append(out, run) < 0) {
                Py_XDECREF(run);
                Py_DECREF(d);
                failed = 1;
                break;
            }
            Py_DECREF(run);
        }
        int appended = PyList_Append(out, d);
        Py_DECREF(d);
        if (appended < 0) {
            failed = 1;
            break;
        }
        pos = start = after;
    }
    if (!failed && pos > start) {
        PyObject *run = PyBytes_FromStringAndSize((const char *)b + start, pos - start);
        if (run == NULL || PyList_Append(out, run) < 0)
            failed = 1;
        Py_XDECREF(run);
    }
    PyBuffer_Release(&view);
    return failed ? NULL : PyLong_FromSsize_t(pos);
}

static PyMethodDef methods[] = {
    {"whole_publish", (PyCFunction)(void (*)(void))whole_publish, METH_FASTCALL,
     "whole_publish(buf, pos, frame_max, max_message_size) -> None or (channel, exchange, "
     "routing_key, mandatory, immediate, properties, body, next_pos)"},
    {"build_deliver", (PyCFunction)(void (*)(void))build_deliver, METH_FASTCALL,
     "build_deliver(channel, consumer_tag, delivery_tag, redelivered, exchange, routing_key, "
     "properties, body, frame_max) -> bytes"},
    {"build_deliver_run", (PyCFunction)(void (*)(void))build_deliver_run, METH_FASTCALL,
     "build_deliver_run(channel, consumer_tag, first_tag, records, count, frame_max, "
     "copy_below) -> list of parts"},
    {"decode_table", (PyCFunction)(void (*)(void))decode_table, METH_FASTCALL,
     "decode_table(buf, pos, end, value_at) -> (dict, stop)"},
    {"decode_array", (PyCFunction)(void (*)(void))decode_array, METH_FASTCALL,
     "decode_array(buf, pos, end, value_at) -> (list, stop)"},
    {"with_stream_headers", (PyCFunction)(void (*)(void))with_stream_headers, METH_FASTCALL,
     "with_stream_headers(raw, offset, timestamp) -> bytes, or NotImplemented"},
    {"stream_place", (PyCFunction)(void (*)(void))stream_place, METH_FASTCALL,
     "stream_place(raw) -> (offset, timestamp, start, stop), None, or NotImplemented"},
    {"build_publish", (PyCFunction)(void (*)(void))build_publish, METH_FASTCALL,
     "build_publish(channel, exchange, routing_key, properties, body, frame_max, mandatory) "
     "-> bytes"},
    {"build_publishes", (PyCFunction)(void (*)(void))build_publishes, METH_FASTCALL,
     "build_publishes(channel, exchange, routing_key, properties, bodies, frame_max, "
     "mandatory) -> bytes"},
    {"stream_publish", (PyCFunction)(void (*)(void))stream_publish, METH_FASTCALL,
     "stream_publish(body, version) -> None or (publisher id, messages)"},
    {"split_deliveries", (PyCFunction)(void (*)(void))split_deliveries, METH_FASTCALL,
     "split_deliveries(buf, pos, taps, cls, out) -> the position it stopped at"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModule_Create(&module); }

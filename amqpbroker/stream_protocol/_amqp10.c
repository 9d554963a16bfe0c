/* The stream protocol's usual AMQP 1.0 message, to the AMQP 0-9-1 form a stream stores and
 * back, in C.
 *
 * to_stored(data, reference, publishing_id, filter_value) -> (properties, body) or None
 * to_kept(data) -> (properties, body, to, subject) or None (the AMQP 1.0 port's form)
 * stream_message(properties, body) -> bytes or None (at the end of this file: the way back)
 * kept_message(properties, body, redelivered) -> bytes or None (the AMQP 1.0 port's way back)
 *
 * A stream-protocol client (rstream, the Java, Go and .NET stream clients) publishes AMQP 1.0
 * messages; the stream stores each as AMQP 0-9-1 properties (their wire bytes) and a body, the
 * AMQP 1.0 bytes around the body kept in two headers (connection.py: ``stored_amqp10``, the
 * reference, which is ``amqp10.to_amqp091`` + ``around_body`` + ``amqp10.encode_properties``
 * and costs ~30 us a message in Python: a consumer of 10,000 rstream messages waited a third of
 * a second on it). This takes the usual shape in one pass with no Python object per field:
 *
 *     [header] [properties] [application-properties] data      (any order, each at most once)
 *
 * with ulong descriptors; header and properties fields of the scalar types below; a
 * message-id / correlation-id that is null or a string of at most 255 bytes; no user-id;
 * application properties whose keys are strings of at most 255 bytes, none twice, none
 * starting "x-" (the names the conversion itself gives meaning to), and whose values are
 * scalars (null, boolean, integers, float, double, timestamp, binary, string, symbol).
 * Anything else -- other sections, lists or maps or uuids inside, bytes that are not UTF-8,
 * a truncated or malformed message, a value pamqp cannot write -- returns None, and the caller
 * takes the Python way, which decides (refusing, converting or storing raw). So this function
 * need only be right where it answers; tests/unit/test_amqp10_stored_c.py holds it equal to the
 * reference on valid, altered, cut and random messages, and checks that the usual ones answer.
 * The AMQP 1.0 port (amqp10/message.py, RabbitMQ 3.10's plugin) stores the same conversion with
 * the properties and application-properties sections kept as they came instead of the bytes
 * around the body (``to_kept``; ``message.stored_py`` the reference).
 *
 * Byte for byte as the reference writes them: the property list in AMQP 0-9-1 order; the
 * headers table with pamqp's entries first, sorted by name as pamqp sorts them (application
 * properties that are strings, booleans, nulls, integers -- pamqp's smallest fitting type -- and
 * timestamps, with x-producer-id, x-sequence, x-stream-filter-value), then the spliced ones in
 * the order given (``properties.with_binary_headers``: binary and floating-point application
 * properties as 'x' and 'd', then the prefix and suffix).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER 0x70
#define PROPERTIES 0x73
#define APPLICATION_PROPERTIES 0x74
#define DATA 0x75
#define SHORTSTR_MAX 255
#define MAX_SECONDS 253402300799LL  /* 9999-12-31T23:59:59Z: Python's datetime ends there */
/* the largest timestamp field pamqp decodes: one over 2**32 it takes for milliseconds */
#define PAMQP_TIMESTAMP_MAX ((uint64_t)MAX_SECONDS * 1000 - 1000)

/* a stream's headers around an AMQP 1.0 body (properties.STREAM_AROUND) */
static const char PREFIX[] = "x-stream-amqp-1.0-prefix", SUFFIX[] = "x-stream-amqp-1.0-suffix";
static const char RAW[] = "x-stream-raw";       /* bytes that are not AMQP 1.0, stored as the body */
/* the AMQP 1.0 port's kept sections (amqp10/message.py KEPT), by section: annotations,
 * properties, application properties, footer */
static const char *KEPT_NAMES[4] = {"x-amqp-1.0-message-annotations", "x-amqp-1.0-properties",
                                    "x-amqp-1.0-app-properties", "x-amqp-1.0-footer"};
#define MAX_ENTRIES 64              /* application properties taken here; more: Python */
#define PAMQP_NAME_MAX 128          /* pamqp's longest table name (it cuts longer ones) */

enum kind { K_NULL, K_BOOL, K_UINT, K_INT, K_FLOAT, K_DOUBLE, K_TS, K_BIN, K_STR, K_SYM,
            K_LIST, K_MAP };

typedef struct {
    enum kind kind;
    uint64_t u;            /* K_UINT, K_BOOL */
    int64_t i;             /* K_INT, K_TS */
    double d;              /* K_FLOAT, K_DOUBLE */
    const unsigned char *p;  /* K_BIN, K_STR, K_SYM: the bytes; K_LIST, K_MAP: the items */
    Py_ssize_t n;          /* their length; K_LIST, K_MAP: the bytes the items fill */
    uint32_t count;        /* K_LIST, K_MAP: items */
} value;

static uint64_t be(const unsigned char *p, int width) {
    uint64_t v = 0;
    for (int i = 0; i < width; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be(unsigned char *p, uint64_t v, int width) {
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

/* Python's strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_ok(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        int more;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { more = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { more = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { more = 3; cp = c & 0x07; }
        else return 0;
        if (n - i - 1 < more) return 0;
        for (int k = 1; k <= more; k++) {
            unsigned char cc = s[i + k];
            if ((cc & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000)) return 0;
        if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
        if (cp > 0x10FFFF) return 0;
        i += more + 1;
    }
    return 1;
}

/* One value at *pos (constructor first) of the types above; 0, or -1: not taken here. */
static int read_value(const unsigned char *b, Py_ssize_t *pos, Py_ssize_t end, value *v) {
    Py_ssize_t at = *pos;
    if (at >= end) return -1;
    unsigned char ctor = b[at++];
    int width = 0;
    switch (ctor) {
    case 0x40: v->kind = K_NULL; break;
    case 0x41: v->kind = K_BOOL; v->u = 1; break;
    case 0x42: v->kind = K_BOOL; v->u = 0; break;
    case 0x43: case 0x44: v->kind = K_UINT; v->u = 0; break;
    case 0x56:
        if (end - at < 1 || b[at] > 1) return -1;
        v->kind = K_BOOL; v->u = b[at]; at += 1; break;
    case 0x50: case 0x52: case 0x53: width = 1; goto unsigned_int;
    case 0x60: width = 2; goto unsigned_int;
    case 0x70: width = 4; goto unsigned_int;
    case 0x80: width = 8;
    unsigned_int:
        if (end - at < width) return -1;
        v->kind = K_UINT; v->u = be(b + at, width); at += width; break;
    case 0x51: case 0x54: case 0x55: width = 1; goto signed_int;
    case 0x61: width = 2; goto signed_int;
    case 0x71: width = 4; goto signed_int;
    case 0x81: case 0x83: width = 8;
    signed_int: {
        if (end - at < width) return -1;
        uint64_t raw = be(b + at, width);
        uint64_t sign = (uint64_t)1 << (8 * width - 1);      /* sign-extend */
        int64_t s = (int64_t)((raw ^ sign) - sign);
        v->kind = ctor == 0x83 ? K_TS : K_INT; v->i = s; at += width; break;
    }
    case 0x72: {
        if (end - at < 4) return -1;
        uint32_t raw = (uint32_t)be(b + at, 4);
        float f;
        memcpy(&f, &raw, 4);
        v->kind = K_FLOAT; v->d = (double)f; at += 4; break;
    }
    case 0x82: {
        if (end - at < 8) return -1;
        uint64_t raw = be(b + at, 8);
        double d;
        memcpy(&d, &raw, 8);
        v->kind = K_DOUBLE; v->d = d; at += 8; break;
    }
    case 0xa0: case 0xa1: case 0xa3: width = 1; goto variable;
    case 0xb0: case 0xb1: case 0xb3: width = 4;
    variable: {
        if (end - at < width) return -1;
        uint64_t n = be(b + at, width);
        at += width;
        if ((uint64_t)(end - at) < n) return -1;
        v->p = b + at; v->n = (Py_ssize_t)n; at += (Py_ssize_t)n;
        v->kind = (ctor & 0x0F) == 0 ? K_BIN : (ctor & 0x0F) == 1 ? K_STR : K_SYM;
        if (v->kind != K_BIN && !utf8_ok(v->p, v->n)) return -1;
        break;
    }
    case 0x45: v->kind = K_LIST; v->p = b + at; v->n = 0; v->count = 0; break;
    case 0xc0: case 0xc1: width = 1; goto compound;
    case 0xd0: case 0xd1: width = 4;
    compound: {
        if (end - at < width) return -1;
        uint64_t size = be(b + at, width);
        at += width;
        if ((uint64_t)(end - at) < size || size < (uint64_t)width) return -1;
        uint64_t count = be(b + at, width);
        if (count > size - width) return -1;
        v->kind = (ctor & 0x0F) == 0 ? K_LIST : K_MAP;
        v->p = b + at + width; v->n = (Py_ssize_t)(size - width); v->count = (uint32_t)count;
        at += (Py_ssize_t)size;
        break;
    }
    default: return -1;
    }
    *pos = at;
    return 0;
}

/* A list's or map's items, each a scalar: read into items[0..max), the rest read and
 * dropped; -1 if one is not taken here or they do not fill the compound exactly. */
static int read_items(const value *c, value *items, uint32_t max) {
    Py_ssize_t pos = 0;
    for (uint32_t k = 0; k < c->count; k++) {
        value tmp, *v = k < max ? &items[k] : &tmp;
        if (read_value(c->p, &pos, c->n, v) < 0 || v->kind == K_LIST || v->kind == K_MAP)
            return -1;
    }
    return pos == c->n ? 0 : -1;
}

/* --- the output: a growing buffer -------------------------------------------------------- */
typedef struct { unsigned char *p; Py_ssize_t len, cap; } out;

static int reserve(out *o, Py_ssize_t more) {
    if (o->len + more <= o->cap) return 0;
    Py_ssize_t cap = o->cap * 2 + more;
    unsigned char *p = PyMem_Realloc(o->p, (size_t)cap);
    if (p == NULL) return -1;
    o->p = p; o->cap = cap;
    return 0;
}

static int put(out *o, const void *p, Py_ssize_t n) {
    if (reserve(o, n) < 0) return -1;
    memcpy(o->p + o->len, p, (size_t)n);
    o->len += n;
    return 0;
}

static int put_byte(out *o, unsigned char c) { return put(o, &c, 1); }

static int put_int(out *o, uint64_t v, int width) {
    unsigned char tmp[8];
    put_be(tmp, v, width);
    return put(o, tmp, width);
}

static int put_shortstr(out *o, const unsigned char *s, Py_ssize_t n) {
    return put_byte(o, (unsigned char)n) < 0 ? -1 : put(o, s, n);
}

static int put_key(out *o, const char *key) {
    return put_shortstr(o, (const unsigned char *)key, (Py_ssize_t)strlen(key));
}

/* pamqp's table_integer: the smallest type that holds v ('b', 's', 'u', 'I', 'i', 'l'). */
static int put_table_integer(out *o, int64_t v) {
    if (v >= -128 && v <= 127) return put_byte(o, 'b') < 0 ? -1 : put_int(o, (uint64_t)v, 1);
    if (v >= -32768 && v <= 32767) return put_byte(o, 's') < 0 ? -1 : put_int(o, (uint64_t)v, 2);
    if (v >= 0 && v <= 65535) return put_byte(o, 'u') < 0 ? -1 : put_int(o, (uint64_t)v, 2);
    if (v >= -2147483648LL && v <= 2147483647LL)
        return put_byte(o, 'I') < 0 ? -1 : put_int(o, (uint64_t)v, 4);
    if (v >= 0 && v <= 4294967295LL) return put_byte(o, 'i') < 0 ? -1 : put_int(o, (uint64_t)v, 4);
    return put_byte(o, 'l') < 0 ? -1 : put_int(o, (uint64_t)v, 8);
}

static int put_longstr(out *o, unsigned char type, const unsigned char *s, Py_ssize_t n) {
    if (put_byte(o, type) < 0 || put_int(o, (uint64_t)n, 4) < 0) return -1;
    return put(o, s, n);
}

/* Integer seconds of an AMQP 1.0 timestamp (ms), as Erlang's ``Ms div 1000``. */
static int64_t seconds_of(int64_t ms) { return ms / 1000; }

static int is_integer(const value *v) { return v->kind == K_UINT || v->kind == K_INT; }

/* A shortstr property from a string or symbol of at most 255 bytes; 0: absent (an empty
 * one too: pamqp leaves out a property that is '') */
static int shortstr_of(const value *v, const unsigned char **s, Py_ssize_t *n) {
    if ((v->kind == K_STR || v->kind == K_SYM) && v->n > 0 && v->n <= SHORTSTR_MAX) {
        *s = v->p; *n = v->n;
        return 1;
    }
    return 0;
}

/* Where the body that lies at b[start..start+n) first occurs in b, as bytes.find finds it.
 * Only an occurrence starting before ``start`` can come first, so only those starts are
 * tried (the bytes before a data section's payload: a few dozen), each compared until it
 * differs; searching the whole message for a 1 KiB body cost 5 us (memmem; bytes.find 2 us).
 * The comparisons that fail may cost at most about the body's size in all; past that
 * (bytes made to repeat the body's start), memmem takes the rest in linear time. */
static Py_ssize_t first_occurrence(const unsigned char *b, Py_ssize_t start, Py_ssize_t n) {
    if (n == 0) return 0;
    Py_ssize_t budget = n + 256;
    for (Py_ssize_t i = 0; i < start; i++) {
        const unsigned char *hit = memchr(b + i, b[start], (size_t)(start - i));
        if (hit == NULL) break;
        i = hit - b;
        Py_ssize_t k = 0;
        while (k < n && b[i + k] == b[start + k]) k++;
        if (k == n) return i;
        budget -= k + 1;
        if (budget < 0) {
            const unsigned char *found = memmem(b + i + 1, (size_t)(start + n - i - 1),
                                                b + start, (size_t)n);
            return found - b;       /* (it finds the body itself at the latest) */
        }
    }
    return start;
}

/* A header written through pamqp: its name and value. */
typedef struct { const unsigned char *key; Py_ssize_t key_n; const value *v; } entry;

static int by_name(const void *a, const void *b) {
    const entry *x = a, *y = b;
    Py_ssize_t n = x->key_n < y->key_n ? x->key_n : y->key_n;
    int c = memcmp(x->key, y->key, (size_t)n);   /* UTF-8 bytes sort as code points do */
    return c != 0 ? c : (x->key_n > y->key_n) - (x->key_n < y->key_n);
}

/* The conversion both functions below make: ``kept`` 0 for a stream (the body's
 * surroundings in two headers; a producer reference and filter value), 1 for the AMQP 1.0
 * port (amqp10/message.py: the properties and application-properties sections kept in
 * headers as they came; their ``to`` and ``subject`` returned too). */
static PyObject *convert(PyObject *data, int kept, const char *ref, Py_ssize_t ref_n,
                         long long sequence, const char *filter, Py_ssize_t filter_n) {
    if (!PyBytes_CheckExact(data)) Py_RETURN_NONE;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data);

    value header = {0}, properties = {0}, application = {0}, body = {0};
    int seen_header = 0, seen_properties = 0, seen_application = 0, seen_body = 0;
    Py_ssize_t pos = 0;
    /* the properties and application-properties sections as they came, in their order */
    const unsigned char *sections[2];
    Py_ssize_t section_n[2];
    const char *section_name[2];
    int n_sections = 0;
    while (pos < end) {
        Py_ssize_t start = pos;
        /* a described section with a ulong descriptor (a symbolic one: not taken here) */
        if (b[pos] != 0x00 || end - pos < 2 || (b[pos + 1] != 0x53 && b[pos + 1] != 0x80))
            Py_RETURN_NONE;
        pos++;
        value descriptor, v;
        if (read_value(b, &pos, end, &descriptor) < 0 || descriptor.kind != K_UINT)
            Py_RETURN_NONE;
        if (read_value(b, &pos, end, &v) < 0) Py_RETURN_NONE;
        if (descriptor.u == PROPERTIES || descriptor.u == APPLICATION_PROPERTIES) {
            if (n_sections == 2) Py_RETURN_NONE;                 /* one repeated */
            sections[n_sections] = b + start;
            section_n[n_sections] = pos - start;
            section_name[n_sections++] = descriptor.u == PROPERTIES
                ? KEPT_NAMES[1] : KEPT_NAMES[2];
        }
        switch (descriptor.u) {
        case HEADER:
            if (seen_header++ || v.kind != K_LIST) Py_RETURN_NONE;
            header = v; break;
        case PROPERTIES:
            if (seen_properties++ || v.kind != K_LIST) Py_RETURN_NONE;
            properties = v; break;
        case APPLICATION_PROPERTIES:
            if (seen_application++ || v.kind != K_MAP || v.count % 2) Py_RETURN_NONE;
            application = v; break;
        case DATA:
            if (seen_body++ || v.kind != K_BIN) Py_RETURN_NONE;
            body = v; break;
        default:
            Py_RETURN_NONE;
        }
    }
    if (!seen_body) Py_RETURN_NONE;

    /* header: durable -> delivery_mode, priority, ttl -> expiration */
    int delivery_mode = -1, priority = -1;
    char expiration[24];
    int expiration_n = -1;
    if (seen_header) {
        value f[5];
        for (int k = 0; k < 5; k++) f[k].kind = K_NULL;
        if (read_items(&header, f, 5) < 0) Py_RETURN_NONE;
        if (f[0].kind == K_BOOL) delivery_mode = f[0].u ? 2 : 1;
        if (is_integer(&f[1])) {
            if (f[1].kind == K_UINT ? f[1].u <= 255 : (f[1].i >= 0 && f[1].i <= 255))
                priority = f[1].kind == K_UINT ? (int)f[1].u : (int)f[1].i;
        }
        if (f[2].kind == K_UINT)
            expiration_n = snprintf(expiration, sizeof expiration, "%llu",
                                    (unsigned long long)f[2].u);
        else if (f[2].kind == K_INT)
            expiration_n = snprintf(expiration, sizeof expiration, "%lld", (long long)f[2].i);
    }

    /* properties: message-id, user-id, reply-to, correlation-id, content-type and -encoding,
     * creation-time */
    value p[13];
    for (int k = 0; k < 13; k++) p[k].kind = K_NULL;
    if (seen_properties && read_items(&properties, p, 13) < 0) Py_RETURN_NONE;
    const unsigned char *message_id = NULL, *correlation_id = NULL, *reply_to = NULL,
                        *content_type = NULL, *content_encoding = NULL;
    Py_ssize_t message_id_n = 0, correlation_id_n = 0, reply_to_n = 0, content_type_n = 0,
               content_encoding_n = 0;
    /* an id that is a string over 255 bytes (an x-message-id header instead), a ulong or a
     * binary (a string plus an x-message-id-type header): not taken here; of the other
     * kinds, none is an id */
    for (int k = 0; k <= 5; k += 5) {
        if (p[k].kind == K_UINT || p[k].kind == K_BIN) Py_RETURN_NONE;
        if ((p[k].kind == K_STR || p[k].kind == K_SYM) && p[k].n > SHORTSTR_MAX)
            Py_RETURN_NONE;
    }
    shortstr_of(&p[0], &message_id, &message_id_n);
    shortstr_of(&p[5], &correlation_id, &correlation_id_n);
    if (p[1].kind != K_NULL) Py_RETURN_NONE;                       /* user-id: checked there */
    shortstr_of(&p[4], &reply_to, &reply_to_n);
    shortstr_of(&p[6], &content_type, &content_type_n);
    shortstr_of(&p[7], &content_encoding, &content_encoding_n);
    int64_t timestamp = -1;
    if (p[9].kind == K_TS && p[9].i >= 0) {
        timestamp = seconds_of(p[9].i);
    }

    /* application properties: keys and values checked before anything is written */
    value app[2 * MAX_ENTRIES];
    uint32_t pairs = 0;
    if (seen_application) {
        if (application.count > 2 * MAX_ENTRIES) Py_RETURN_NONE;
        if (read_items(&application, app, 2 * MAX_ENTRIES) < 0) Py_RETURN_NONE;
        pairs = application.count / 2;
        for (uint32_t k = 0; k < pairs; k++) {
            const value *key = &app[2 * k];
            /* (pamqp cuts a name over 128 bytes short: not taken here) */
            if ((key->kind != K_STR && key->kind != K_SYM) || key->n > PAMQP_NAME_MAX)
                Py_RETURN_NONE;
            if (app[2 * k + 1].kind == K_UINT && app[2 * k + 1].u > (uint64_t)INT64_MAX)
                Py_RETURN_NONE;                 /* pamqp has no type for it */
            if (key->n >= 2 && key->p[0] == 'x' && key->p[1] == '-') Py_RETURN_NONE;
            for (uint32_t j = 0; j < k; j++) {
                const value *other = &app[2 * j];
                if (other->n == key->n && memcmp(other->p, key->p, (size_t)key->n) == 0)
                    Py_RETURN_NONE;
            }
        }
    }

    Py_ssize_t at = kept ? 0 : first_occurrence(b, body.p - b, body.n);

    out o = {NULL, 0, 0};
    if (reserve(&o, 64 + end + 32 * (Py_ssize_t)pairs) < 0) return PyErr_NoMemory();
    uint16_t flags = 0x2000;                                   /* headers: always */
    if (content_type) flags |= 0x8000;
    if (content_encoding) flags |= 0x4000;
    if (delivery_mode >= 0) flags |= 0x1000;
    if (priority >= 0) flags |= 0x0800;
    if (correlation_id) flags |= 0x0400;
    if (reply_to) flags |= 0x0200;
    if (expiration_n >= 0) flags |= 0x0100;
    if (message_id) flags |= 0x0080;
    if (timestamp >= 0) flags |= 0x0040;
    int failed = put_int(&o, flags, 2) < 0;
    if (content_type) failed |= put_shortstr(&o, content_type, content_type_n) < 0;
    if (content_encoding) failed |= put_shortstr(&o, content_encoding, content_encoding_n) < 0;
    Py_ssize_t table_at = o.len;
    failed |= put_int(&o, 0, 4) < 0;                          /* the table's size, below */
    /* pamqp's entries, sorted by name as pamqp writes a table */
    entry entries[MAX_ENTRIES + 3];
    int n_entries = 0;
    for (uint32_t k = 0; k < pairs; k++) {
        const value *v = &app[2 * k + 1];
        if (v->kind == K_BIN || v->kind == K_FLOAT || v->kind == K_DOUBLE) continue;
        if (v->kind == K_TS && (seconds_of(v->i) < 0 || seconds_of(v->i) > MAX_SECONDS))
            continue;                                   /* no 0-9-1 timestamp: dropped */
        entries[n_entries++] = (entry){app[2 * k].p, app[2 * k].n, v};
    }
    value producer = {0}, sequence_value = {0}, filter_string = {0};
    if (ref != NULL) {
        producer.kind = K_STR; producer.p = (const unsigned char *)ref; producer.n = ref_n;
        sequence_value.kind = K_INT; sequence_value.i = sequence;
        entries[n_entries++] = (entry){(const unsigned char *)"x-producer-id", 13, &producer};
        entries[n_entries++] = (entry){(const unsigned char *)"x-sequence", 10, &sequence_value};
    }
    if (filter != NULL) {
        filter_string.kind = K_STR; filter_string.p = (const unsigned char *)filter;
        filter_string.n = filter_n;
        entries[n_entries++] = (entry){(const unsigned char *)"x-stream-filter-value", 21,
                                       &filter_string};
    }
    qsort(entries, (size_t)n_entries, sizeof(entry), by_name);
    for (int k = 0; k < n_entries && !failed; k++) {
        const value *v = entries[k].v;
        failed |= put_shortstr(&o, entries[k].key, entries[k].key_n) < 0;
        switch (v->kind) {
        case K_STR: case K_SYM: failed |= put_longstr(&o, 'S', v->p, v->n) < 0; break;
        case K_BOOL:
            failed |= put_byte(&o, 't') < 0 || put_byte(&o, (unsigned char)v->u) < 0;
            break;
        case K_NULL: failed |= put_byte(&o, 'V') < 0; break;
        case K_UINT: failed |= put_table_integer(&o, (int64_t)v->u) < 0; break;
        case K_INT: failed |= put_table_integer(&o, v->i) < 0; break;
        case K_TS:
            failed |= put_byte(&o, 'T') < 0 || put_int(&o, (uint64_t)seconds_of(v->i), 8) < 0;
            break;
        default: break;
        }
    }
    /* the spliced entries: binary and floating point, then the body's surroundings */
    for (uint32_t k = 0; k < pairs && !failed; k++) {
        const value *key = &app[2 * k], *v = &app[2 * k + 1];
        if (v->kind == K_BIN) {
            failed |= put_shortstr(&o, key->p, key->n) < 0 || put_longstr(&o, 'x', v->p, v->n) < 0;
        } else if (v->kind == K_FLOAT || v->kind == K_DOUBLE) {
            uint64_t raw;
            memcpy(&raw, &v->d, 8);
            failed |= put_shortstr(&o, key->p, key->n) < 0 || put_byte(&o, 'd') < 0
                || put_int(&o, raw, 8) < 0;
        }
    }
    if (!kept) {
        failed |= put_key(&o, PREFIX) < 0
            || put_longstr(&o, 'x', b, at) < 0
            || put_key(&o, SUFFIX) < 0
            || put_longstr(&o, 'x', b + at + body.n, end - at - body.n) < 0;
    } else {
        for (int k = 0; k < n_sections; k++)
            failed |= put_key(&o, section_name[k]) < 0
                || put_longstr(&o, 'x', sections[k], section_n[k]) < 0;
    }
    if (!failed && kept && o.len == table_at + 4) {
        o.len = table_at;                       /* no headers at all: none, as pamqp */
        put_be(o.p, flags & ~0x2000u, 2);
    } else if (!failed) {
        Py_ssize_t size = o.len - table_at - 4;
        if ((uint64_t)size > UINT32_MAX) { PyMem_Free(o.p); Py_RETURN_NONE; }
        put_be(o.p + table_at, (uint64_t)size, 4);
    }
    if (delivery_mode >= 0) failed |= put_byte(&o, (unsigned char)delivery_mode) < 0;
    if (priority >= 0) failed |= put_byte(&o, (unsigned char)priority) < 0;
    if (correlation_id) failed |= put_shortstr(&o, correlation_id, correlation_id_n) < 0;
    if (reply_to) failed |= put_shortstr(&o, reply_to, reply_to_n) < 0;
    if (expiration_n >= 0)
        failed |= put_shortstr(&o, (const unsigned char *)expiration, expiration_n) < 0;
    if (message_id) failed |= put_shortstr(&o, message_id, message_id_n) < 0;
    if (timestamp >= 0) failed |= put_int(&o, (uint64_t)timestamp, 8) < 0;
    if (failed) {
        PyMem_Free(o.p);
        return PyErr_NoMemory();
    }
    PyObject *props = PyBytes_FromStringAndSize((const char *)o.p, o.len);
    PyMem_Free(o.p);
    if (props == NULL) return NULL;
    PyObject *payload = PyBytes_FromStringAndSize((const char *)body.p, body.n);
    if (payload == NULL) { Py_DECREF(props); return NULL; }
    if (!kept) {
        PyObject *result = PyTuple_Pack(2, props, payload);
        Py_DECREF(props);
        Py_DECREF(payload);
        return result;
    }
    PyObject *text[2] = {NULL, NULL};                  /* to, subject: strings or None */
    for (int k = 0; k < 2; k++) {
        const value *v = &p[2 + k];
        text[k] = v->kind == K_STR || v->kind == K_SYM
            ? PyUnicode_DecodeUTF8((const char *)v->p, v->n, "strict") : Py_NewRef(Py_None);
    }
    PyObject *result = text[0] && text[1]
        ? PyTuple_Pack(4, props, payload, text[0], text[1]) : NULL;
    Py_DECREF(props);
    Py_DECREF(payload);
    Py_XDECREF(text[0]);
    Py_XDECREF(text[1]);
    return result;
}

static PyObject *to_stored(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "to_stored(data, reference, publishing_id, "
                        "filter_value)");
        return NULL;
    }
    PyObject *reference = args[1], *publishing_id = args[2], *filter_value = args[3];
    const char *ref = NULL, *filter = NULL;
    Py_ssize_t ref_n = 0, filter_n = 0;
    long long sequence = 0;
    if (reference != Py_None) {
        if (!PyUnicode_Check(reference)) Py_RETURN_NONE;
        ref = PyUnicode_AsUTF8AndSize(reference, &ref_n);
        if (ref == NULL) { PyErr_Clear(); Py_RETURN_NONE; }
        int overflow = 0;
        sequence = PyLong_AsLongLongAndOverflow(publishing_id, &overflow);
        if (overflow || (sequence == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
    }
    if (filter_value != Py_None) {
        if (!PyUnicode_Check(filter_value)) Py_RETURN_NONE;
        filter = PyUnicode_AsUTF8AndSize(filter_value, &filter_n);
        if (filter == NULL) { PyErr_Clear(); Py_RETURN_NONE; }
    }
    return convert(args[0], 0, ref, ref_n, sequence, filter, filter_n);
}

/* to_kept(data) -> (properties, body, to, subject) or None: what the AMQP 1.0 port
 * publishes for a message (amqp10/message.py's ``stored``, the reference). */
static PyObject *to_kept(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "to_kept(data)");
        return NULL;
    }
    return convert(args[0], 1, NULL, 0, 0, NULL, 0);
}

/* --- back: a stored message's AMQP 1.0 bytes -------------------------------------------- */


/* The size of the field value of type t at b[pos..end) (after its type byte), or -1 for a
 * type not taken here (decimals, tables, arrays, a timestamp beyond what pamqp reads: their
 * decoding can refuse) or a value past end. */
static Py_ssize_t field_size(unsigned char t, const unsigned char *b, Py_ssize_t pos,
                             Py_ssize_t end) {
    Py_ssize_t n;
    switch (t) {
    case 'V': n = 0; break;
    case 't': case 'b': case 'B': n = 1; break;
    case 's': case 'u': n = 2; break;
    case 'I': case 'i': case 'f': n = 4; break;
    case 'l': case 'L': case 'd': n = 8; break;
    case 'T':                                   /* one pamqp decodes */
        if (end - pos < 8 || be(b + pos, 8) > PAMQP_TIMESTAMP_MAX) return -1;
        n = 8;
        break;
    case 'S': case 'x':
        if (end - pos < 4) return -1;
        n = 4 + (Py_ssize_t)be(b + pos, 4);
        break;
    default: return -1;
    }
    return end - pos < n ? -1 : n;
}

/* A shortstr property at *pos: its bytes (UTF-8, as pamqp decodes it); -1 if it is not. */
static int shortstr_field(const unsigned char *b, Py_ssize_t *pos, Py_ssize_t end,
                          const unsigned char **s, Py_ssize_t *n) {
    if (*pos >= end || end - *pos - 1 < b[*pos] || !utf8_ok(b + *pos + 1, b[*pos])) return -1;
    *s = b + *pos + 1;
    *n = b[*pos];
    *pos += 1 + b[*pos];
    return 0;
}

/* The headers table of a property list with the given flags (no continuation): *pos at its
 * first entry, *stop after its last (the content type and encoding before it skipped); -1
 * when the list does not plainly hold one. */
static int headers_table(const unsigned char *b, Py_ssize_t end, unsigned flags,
                         Py_ssize_t *pos, Py_ssize_t *stop) {
    const unsigned char *s;
    Py_ssize_t n;
    *pos = 2;
    if ((flags & 1) || !(flags & 0x2000)) return -1;
    for (unsigned bit = 0x8000; bit >= 0x4000; bit >>= 1)   /* content type, encoding */
        if ((flags & bit) && shortstr_field(b, pos, end, &s, &n) < 0) return -1;
    if (end - *pos < 4) return -1;
    uint64_t size = be(b + *pos, 4);
    *pos += 4;
    if ((uint64_t)(end - *pos) < size) return -1;
    *stop = *pos + (Py_ssize_t)size;
    return 0;
}

/* One entry of a headers table at *pos (before stop): its name, type, and value (for 'S'
 * and 'x' its bytes after the length); 0, or -1 for an entry not taken here. */
typedef struct {
    const unsigned char *key, *value;
    Py_ssize_t key_n, value_n;
    unsigned char type;
} header;

static int next_header(const unsigned char *b, Py_ssize_t *pos, Py_ssize_t stop, header *h) {
    Py_ssize_t at = *pos, key_n = b[at++];
    if (stop - at < key_n + 1 || !utf8_ok(b + at, key_n)) return -1;
    h->key = b + at;
    h->key_n = key_n;
    at += key_n;
    h->type = b[at++];
    Py_ssize_t size = field_size(h->type, b, at, stop);
    if (size < 0) return -1;
    int sized = h->type == 'S' || h->type == 'x';
    h->value = b + at + (sized ? 4 : 0);
    h->value_n = size - (sized ? 4 : 0);
    *pos = at + size;
    return 0;
}

static int is_key(const header *h, const char *name) {
    return h->key_n == (Py_ssize_t)strlen(name) && memcmp(h->key, name, (size_t)h->key_n) == 0;
}

/* stream_message(properties, body) -> bytes or None
 *
 * The message a stream-protocol consumer gets for a stored one: for one that came as AMQP
 * 1.0, the x-stream-amqp-1.0-prefix byte array, the body, the -suffix byte array (the last of
 * each name, as a dict keeps it); else for raw bytes (x-stream-raw true, the last of that
 * name) the body. None where that is not plainly so (neither, a continuation flag, a header
 * value of a type not taken here, bytes that do not parse): connection.stream_message_py,
 * the reference, decides. */
static PyObject *stream_message(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "stream_message(properties, body)");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) Py_RETURN_NONE;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t end = PyBytes_GET_SIZE(args[0]), pos, stop;
    if (end < 2 || headers_table(b, end, (unsigned)be(b, 2), &pos, &stop) < 0) Py_RETURN_NONE;
    const unsigned char *prefix = NULL, *suffix = NULL;
    Py_ssize_t prefix_n = 0, suffix_n = 0;
    int prefix_x = 0, suffix_x = 0, raw = 0;
    header h;
    while (pos < stop) {
        if (next_header(b, &pos, stop, &h) < 0) Py_RETURN_NONE;
        if (is_key(&h, PREFIX)) {
            prefix_x = h.type == 'x'; prefix = h.value; prefix_n = h.value_n;
        } else if (is_key(&h, SUFFIX)) {
            suffix_x = h.type == 'x'; suffix = h.value; suffix_n = h.value_n;
        } else if (is_key(&h, RAW)) {
            raw = h.type == 't' && h.value[0] != 0;     /* a boolean true */
        }
    }
    if (prefix == NULL || suffix == NULL || !prefix_x || !suffix_x) {
        if (!raw) Py_RETURN_NONE;
        Py_INCREF(args[1]);
        return args[1];
    }
    Py_ssize_t body_n = PyBytes_GET_SIZE(args[1]);
    PyObject *out = PyBytes_FromStringAndSize(NULL, prefix_n + body_n + suffix_n);
    if (out == NULL) return NULL;
    char *o = PyBytes_AS_STRING(out);
    memcpy(o, prefix, (size_t)prefix_n);
    memcpy(o + prefix_n, PyBytes_AS_STRING(args[1]), (size_t)body_n);
    memcpy(o + prefix_n + body_n, suffix, (size_t)suffix_n);
    return out;
}

/* kept_message(properties, body, redelivered) -> bytes or None
 *
 * The AMQP 1.0 message the AMQP 1.0 port gives a consumer for a message that came over AMQP
 * 1.0 with its properties section (and, if it had none, no other headers): a header section
 * made anew (durable from the delivery mode, priority, ttl from the expiration, first-acquirer
 * = not redelivered), the kept message-annotations, properties and application-properties
 * sections, a data section of the body, the kept footer. None for anything else -- a
 * stream's delivery (x-stream-offset), an amqp-value or other body, properties published over
 * AMQP 0-9-1, a property list that does not plainly decode --: amqp10/message.outgoing_py,
 * the reference, decides. */

static PyObject *kept_message(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "kept_message(properties, body, redelivered)");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) Py_RETURN_NONE;
    int redelivered = PyObject_IsTrue(args[2]);
    if (redelivered < 0) return NULL;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t end = PyBytes_GET_SIZE(args[0]), pos, stop;
    if (end < 2) Py_RETURN_NONE;
    unsigned flags = (unsigned)be(b, 2);
    /* the unused bit before the continuation flag, a type (an "amqp-1.0" body is its
     * encoded sections): not taken here */
    if ((flags & 0x0022) || headers_table(b, end, flags, &pos, &stop) < 0) Py_RETURN_NONE;
    const unsigned char *s, *kept[4] = {NULL, NULL, NULL, NULL};
    Py_ssize_t n, kept_n[4] = {0, 0, 0, 0};
    int delivery_mode = -1, priority = -1, other_headers = 0;
    const unsigned char *expiration = NULL;
    Py_ssize_t expiration_n = 0;
    header h;
    while (pos < stop) {
        if (next_header(b, &pos, stop, &h) < 0) Py_RETURN_NONE;
        int known = 0;
        for (int k = 0; k < 4; k++) {
            if (is_key(&h, KEPT_NAMES[k])) {
                if (h.type != 'x') Py_RETURN_NONE;
                kept[k] = h.value;
                kept_n[k] = h.value_n;
                known = 1;
            }
        }
        /* the body's type (x-amqp-1.0-value), a stream's offset, a quorum queue's count of
         * returns (the header's delivery-count): not taken here */
        if (is_key(&h, "x-amqp-1.0-value") || is_key(&h, "x-stream-offset")
                || is_key(&h, "x-delivery-count")) Py_RETURN_NONE;
        other_headers |= !known;
    }
    if (flags & 0x1000) { if (pos >= end) Py_RETURN_NONE; delivery_mode = b[pos++]; }
    if (flags & 0x0800) { if (pos >= end) Py_RETURN_NONE; priority = b[pos++]; }
    for (unsigned bit = 0x0400; bit >= 0x0080; bit >>= 1) {      /* correlation-id .. id */
        if (!(flags & bit)) continue;
        if (shortstr_field(b, &pos, end, &s, &n) < 0) Py_RETURN_NONE;
        if (bit == 0x0100) { expiration = s; expiration_n = n; }
    }
    if (flags & 0x0040) {                       /* a timestamp pamqp can read */
        if (end - pos < 8 || be(b + pos, 8) > PAMQP_TIMESTAMP_MAX)
            Py_RETURN_NONE;
        pos += 8;
    }
    for (unsigned bit = 0x0010; bit >= 0x0004; bit >>= 1)   /* user-id, app-id, cluster-id */
        if ((flags & bit) && shortstr_field(b, &pos, end, &s, &n) < 0) Py_RETURN_NONE;
    if (pos != end || kept[1] == NULL || (kept[2] == NULL && other_headers)) Py_RETURN_NONE;

    /* ttl: the expiration as a uint, when it is one (digits only: anything else, Python) */
    int has_ttl = 0;
    uint64_t ttl = 0;
    if (expiration != NULL && expiration_n > 0) {
        int negative = expiration[0] == '-';       /* (an AMQP 1.0 header's ttl of -1) */
        if (negative && expiration_n == 1) Py_RETURN_NONE;
        for (Py_ssize_t k = negative; k < expiration_n; k++) {
            if (expiration[k] < '0' || expiration[k] > '9') Py_RETURN_NONE;
            ttl = ttl * 10 + (uint64_t)(expiration[k] - '0');
            if (ttl > UINT32_MAX) ttl = (uint64_t)UINT32_MAX + 1;     /* too big, stays so */
        }
        has_ttl = ttl <= UINT32_MAX && !(negative && ttl);  /* a ttl is a uint; else none */
    }
    unsigned char head[32];
    int w = 0;
    head[w++] = 0x00; head[w++] = 0x53; head[w++] = HEADER; head[w++] = 0xc0;
    int size_at = w++;
    head[w++] = 5;
    head[w++] = 0x56; head[w++] = delivery_mode == 2;
    if (priority >= 0) { head[w++] = 0x50; head[w++] = (unsigned char)priority; }
    else head[w++] = 0x40;
    if (!has_ttl) head[w++] = 0x40;
    else if (ttl == 0) head[w++] = 0x43;
    else if (ttl < 256) { head[w++] = 0x52; head[w++] = (unsigned char)ttl; }
    else { head[w++] = 0x70; put_be(head + w, ttl, 4); w += 4; }
    head[w++] = 0x56; head[w++] = !redelivered;
    head[w++] = 0x40;
    head[size_at] = (unsigned char)(w - size_at - 1);

    Py_ssize_t body_n = PyBytes_GET_SIZE(args[1]);
    unsigned char data_head[8] = {0x00, 0x53, DATA};
    int d = 3;
    if (body_n <= 254) { data_head[d++] = 0xa0; data_head[d++] = (unsigned char)body_n; }
    else if ((uint64_t)body_n <= UINT32_MAX) {
        data_head[d++] = 0xb0; put_be(data_head + d, (uint64_t)body_n, 4); d += 4;
    } else Py_RETURN_NONE;
    Py_ssize_t total = w + kept_n[0] + kept_n[1] + kept_n[2] + d + body_n + kept_n[3];
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(o, head, (size_t)w); o += w;
    for (int k = 0; k < 3; k++) { if (kept[k]) memcpy(o, kept[k], (size_t)kept_n[k]); o += kept_n[k]; }
    memcpy(o, data_head, (size_t)d); o += d;
    memcpy(o, PyBytes_AS_STRING(args[1]), (size_t)body_n); o += body_n;
    if (kept[3]) memcpy(o, kept[3], (size_t)kept_n[3]);
    return out;
}

static PyMethodDef methods[] = {
    {"kept_message", (PyCFunction)(void (*)(void))kept_message, METH_FASTCALL,
     "kept_message(properties, body, redelivered) -> the AMQP 1.0 port's message, or None"},
    {"to_kept", (PyCFunction)(void (*)(void))to_kept, METH_FASTCALL,
     "to_kept(data) -> (properties, body, to, subject) or None"},
    {"stream_message", (PyCFunction)(void (*)(void))stream_message, METH_FASTCALL,
     "stream_message(properties, body) -> the AMQP 1.0 bytes of a stored message, or None"},
    {"to_stored", (PyCFunction)(void (*)(void))to_stored, METH_FASTCALL,
     "to_stored(data, reference, publishing_id, filter_value) -> (properties, body) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_amqp10",
    "The usual AMQP 1.0 stream message to its stored AMQP 0-9-1 form (see the C source).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__amqp10(void) { return PyModule_Create(&module); }

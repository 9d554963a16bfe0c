/* SPSC ring of variable-length records in shared memory: see ring.h for the layout. */
#include "ring.h"

#include <string.h>

_Static_assert(sizeof(struct ring_hdr) <= RING_HDR_SIZE, "ring header overflows RING_HDR_SIZE");
_Static_assert(RING_HDR_SIZE % RING_CACHELINE == 0, "data area must start on a cache line");

static inline uint64_t rec_size(uint64_t len)
{
    return (RING_REC_HDR + len + (RING_ALIGN - 1)) & ~(uint64_t)(RING_ALIGN - 1);
}

static inline int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* Bytes a record of size sz consumes at head: itself, plus the skipped tail of the data area
 * when it does not fit before the end (the wrap marker's slot). */
static inline uint64_t bytes_needed(const ring_t *r, uint64_t head, uint64_t sz)
{
    uint64_t room = r->capacity - (head & r->mask);
    return sz <= room ? sz : room + sz;
}

size_t ring_mem_size(uint64_t capacity) { return (size_t)(RING_HDR_SIZE + capacity); }

/* Largest payload such that an empty ring always accepts it, whatever the offset of head:
 * rec_size(len) <= capacity / 2 fits either before the end or, after a wrap, at offset 0. */
uint64_t ring_max_record_for(uint64_t capacity) { return capacity / 2 - RING_REC_HDR; }

int ring_init(void *mem, size_t mem_size, uint64_t capacity)
{
    struct ring_hdr *h = mem;
    if (!mem || ((uintptr_t)mem % RING_CACHELINE) || !is_pow2(capacity) ||
        capacity < RING_MIN_CAPACITY || capacity > RING_MAX_CAPACITY ||
        mem_size < ring_mem_size(capacity))
        return RING_EINVAL;
    memset(h, 0, RING_HDR_SIZE);
    h->version = RING_VERSION;
    h->hdr_size = RING_HDR_SIZE;
    h->capacity = capacity;
    h->max_record = ring_max_record_for(capacity);
    /* Release: orders every header field above before the magic, which ring_attach loads with
     * acquire, so an attacher never sees a half-initialised header. */
    __atomic_store_n(&h->magic, RING_MAGIC, __ATOMIC_RELEASE);
    return RING_OK;
}

static int header_ok(const struct ring_hdr *h, size_t mem_size)
{
    /* Acquire: pairs with the release store of magic in ring_init (see there). */
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != RING_MAGIC)
        return 0;
    return h->version == RING_VERSION && h->hdr_size == RING_HDR_SIZE &&
           is_pow2(h->capacity) && h->capacity >= RING_MIN_CAPACITY &&
           h->capacity <= RING_MAX_CAPACITY && ring_mem_size(h->capacity) <= mem_size &&
           h->max_record == ring_max_record_for(h->capacity);
}

int ring_attach(ring_t *r, void *mem, size_t mem_size)
{
    struct ring_hdr *h = mem;
    if (!r || !mem || ((uintptr_t)mem % RING_CACHELINE) || mem_size < RING_HDR_SIZE)
        return RING_EINVAL;
    if (!header_ok(h, mem_size))
        return RING_ECORRUPT;
    r->hdr = h;
    r->data = (uint8_t *)mem + RING_HDR_SIZE;
    r->capacity = h->capacity;
    r->mask = h->capacity - 1;
    r->max_record = h->max_record;
    /* Acquire (both): seed the caches with values no newer than the real indices; the caches
     * are only hints and are refreshed when they say full/empty. */
    r->tail_cache = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    r->head_cache = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    return RING_OK;
}

/* ---------------------------------------------------------------- producer */

/* Is there room for `need` bytes at head?  Re-reads the consumer's tail only when the cached
 * copy says no (rigtorp's readIdxCache). */
static inline int have_space(ring_t *r, uint64_t head, uint64_t need)
{
    uint64_t used = head - r->tail_cache;
    if (used <= r->capacity && r->capacity - used >= need)
        return 1;
    /* Acquire: pairs with the consumer's release store of tail; once we see a tail value the
     * consumer has finished copying out every byte before it, so we may overwrite them. */
    r->tail_cache = __atomic_load_n(&r->hdr->tail, __ATOMIC_ACQUIRE);
    used = head - r->tail_cache;
    return used <= r->capacity && r->capacity - used >= need;
}

/* Write one record at head (plus a wrap marker if needed) and return the new head.  Plain
 * stores: they become visible to the consumer through the later release store of head. */
static inline uint64_t write_record(ring_t *r, uint64_t head, const void *data, uint32_t len)
{
    uint64_t off = head & r->mask;
    uint64_t sz = rec_size(len);
    if (sz > r->capacity - off) {
        /* off is 8-aligned and < capacity, so there are always >= 8 bytes for the marker. */
        const uint32_t wrap = RING_WRAP;
        memcpy(r->data + off, &wrap, sizeof wrap);
        head += r->capacity - off;
        off = 0;
    }
    memcpy(r->data + off, &len, sizeof len);
    memcpy(r->data + off + RING_REC_HDR, data, len);
    return head + sz;
}

/* After publishing head: must the sleeping consumer be woken? */
static inline int reader_needs_wake(ring_t *r)
{
    /* Full fence (StoreLoad): orders our release store of head before the load of
     * reader_waiting below.  Pairs with the fence in ring_reader_prepare_sleep (store flag,
     * fence, load head): with both fences at least one side sees the other's store, so either
     * we see the flag and wake the reader, or the reader's re-check sees our record.  Without
     * it the store of head could sit in our store buffer while both sides miss (lost wake-up). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->hdr->reader_waiting, __ATOMIC_RELAXED) == 0)
        return 0;
    /* Relaxed exchange: only clears the flag so that one push per sleep pays the syscall; the
     * ordering that matters was given by the fence above. */
    return __atomic_exchange_n(&r->hdr->reader_waiting, 0, __ATOMIC_RELAXED) != 0;
}

int ring_push(ring_t *r, const void *data, size_t len)
{
    if (len > r->max_record)
        return RING_TOO_BIG;
    /* Relaxed: head is written only by this side, so our own last store is what we read. */
    uint64_t head = __atomic_load_n(&r->hdr->head, __ATOMIC_RELAXED);
    if (!have_space(r, head, bytes_needed(r, head, rec_size(len))))
        return RING_AGAIN;
    head = write_record(r, head, data, (uint32_t)len);
    /* Release: publishes the record bytes written above before the new head; pairs with the
     * consumer's acquire load of head. */
    __atomic_store_n(&r->hdr->head, head, __ATOMIC_RELEASE);
    return reader_needs_wake(r) ? RING_OK_WAKE : RING_OK;
}

int ring_push_many(ring_t *r, const uint8_t *data, const uint32_t *lens, size_t n,
                   size_t *npushed)
{
    /* Relaxed: our own index (see ring_push). */
    uint64_t head0 = __atomic_load_n(&r->hdr->head, __ATOMIC_RELAXED);
    uint64_t head = head0;
    size_t i;
    int rc = RING_OK;
    for (i = 0; i < n; i++) {
        if (lens[i] > r->max_record) {
            rc = RING_TOO_BIG;
            break;
        }
        if (!have_space(r, head, bytes_needed(r, head, rec_size(lens[i])))) {
            rc = RING_AGAIN;
            break;
        }
        head = write_record(r, head, data, lens[i]);
        data += lens[i];
    }
    *npushed = i;
    if (i == 0)
        return rc;
    /* Release: one store publishes the whole batch (every byte written above) at once; pairs
     * with the consumer's acquire load of head. */
    __atomic_store_n(&r->hdr->head, head, __ATOMIC_RELEASE);
    return reader_needs_wake(r) ? RING_OK_WAKE : RING_OK;
}

/* The leading records of lens[0..n) that fit, reserved at head without moving it: each
 * record's length header (and a wrap marker where one is needed) is written, its payload's
 * offset from the mapping base goes to offs[i], and *new_head is where head will be once the
 * caller, having written every payload at its offset, calls ring_commit(r, *new_head). Lets a
 * caller pack its records straight into the ring instead of into a buffer copied here after.
 * Only this side writes head, so nothing is visible to the consumer until the commit. */
int ring_reserve_many(ring_t *r, const uint32_t *lens, size_t n, uint64_t *offs,
                      size_t *nreserved, uint64_t *new_head)
{
    /* Relaxed: our own index (see ring_push). */
    uint64_t head = __atomic_load_n(&r->hdr->head, __ATOMIC_RELAXED);
    size_t i;
    int rc = RING_OK;
    for (i = 0; i < n; i++) {
        uint64_t sz = rec_size(lens[i]);
        if (lens[i] > r->max_record) {
            rc = RING_TOO_BIG;
            break;
        }
        if (!have_space(r, head, bytes_needed(r, head, sz))) {
            rc = RING_AGAIN;
            break;
        }
        uint64_t off = head & r->mask;
        if (sz > r->capacity - off) {
            const uint32_t wrap = RING_WRAP;
            memcpy(r->data + off, &wrap, sizeof wrap);
            head += r->capacity - off;
            off = 0;
        }
        memcpy(r->data + off, &lens[i], sizeof lens[i]);
        offs[i] = RING_HDR_SIZE + off + RING_REC_HDR;
        head += sz;
    }
    *nreserved = i;
    *new_head = head;
    return i ? RING_OK : rc;
}

int ring_commit(ring_t *r, uint64_t new_head)
{
    /* Release: publishes every payload the caller wrote into its reservation before the new
     * head; pairs with the consumer's acquire load of head (as in ring_push_many). */
    __atomic_store_n(&r->hdr->head, new_head, __ATOMIC_RELEASE);
    return reader_needs_wake(r) ? RING_OK_WAKE : RING_OK;
}

/* ring_commit without the wake-up: the records are published, but a consumer asleep on the
 * ring stays asleep and its flag stays set, so the next ring_commit (or push) still wakes it.
 * For records nothing waits for: the consumer reads them when it wakes for something else,
 * or the caller writes data_fd later (shm/ring.py, push_with(wake=False)). */
void ring_commit_quiet(ring_t *r, uint64_t new_head)
{
    /* Release: as in ring_commit. No fence and no look at reader_waiting: nobody is woken. */
    __atomic_store_n(&r->hdr->head, new_head, __ATOMIC_RELEASE);
}

int ring_can_push(ring_t *r, size_t len)
{
    if (len > r->max_record)
        return RING_TOO_BIG;
    /* Relaxed: our own index. */
    uint64_t head = __atomic_load_n(&r->hdr->head, __ATOMIC_RELAXED);
    return have_space(r, head, bytes_needed(r, head, rec_size(len))) ? RING_OK : RING_AGAIN;
}

/* Producer about to sleep until a record of len bytes fits.  Returns RING_OK if it may sleep
 * (flag set, still no room), RING_AGAIN if there is room now (flag cleared, push again). */
int ring_writer_prepare_sleep(ring_t *r, size_t len)
{
    __atomic_store_n(&r->hdr->writer_waiting, 1, __ATOMIC_RELAXED);
    /* Full fence (StoreLoad): the flag store is ordered before the re-read of tail in
     * ring_can_push.  Pairs with the fence in writer_needs_wake (store tail, fence, load flag):
     * either the consumer sees our flag, or we see the tail it freed. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* Acquire: pairs with the consumer's release of tail (bytes before it are free). */
    r->tail_cache = __atomic_load_n(&r->hdr->tail, __ATOMIC_ACQUIRE);
    if (ring_can_push(r, len) == RING_AGAIN)
        return RING_OK;
    ring_writer_cancel_sleep(r);
    return RING_AGAIN;
}

void ring_writer_cancel_sleep(ring_t *r)
{
    /* Relaxed: a stale 1 only costs the consumer one spurious eventfd write. */
    __atomic_store_n(&r->hdr->writer_waiting, 0, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- consumer */

/* After releasing tail: must the sleeping producer be woken? */
static inline int writer_needs_wake(ring_t *r)
{
    /* Full fence (StoreLoad): orders our release store of tail before the load of
     * writer_waiting.  Pairs with the fence in ring_writer_prepare_sleep (see there). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->hdr->writer_waiting, __ATOMIC_RELAXED) == 0)
        return 0;
    /* Relaxed exchange: one wake per sleep; ordering given by the fence above. */
    return __atomic_exchange_n(&r->hdr->writer_waiting, 0, __ATOMIC_RELAXED) != 0;
}

/* Read the record header at tail (skipping wrap markers, which moves *tail).  Returns RING_OK
 * with the payload length, RING_AGAIN if only wrap markers lay before head, RING_ECORRUPT. */
static inline int next_record(const ring_t *r, uint64_t *tail, uint64_t head, uint32_t *len)
{
    while (*tail != head) {
        uint64_t off = *tail & r->mask;
        uint32_t l;
        memcpy(&l, r->data + off, sizeof l);
        if (l == RING_WRAP) {
            if (off == 0)
                return RING_ECORRUPT;
            *tail += r->capacity - off;
            continue;
        }
        if (l > r->max_record || rec_size(l) > r->capacity - off || rec_size(l) > head - *tail)
            return RING_ECORRUPT;
        *len = l;
        return RING_OK;
    }
    return RING_AGAIN;
}

int ring_pop_many(ring_t *r, uint8_t *buf, size_t buf_len, size_t max_bytes, uint32_t *offs,
                  size_t max_records, size_t *npopped)
{
    /* Relaxed: our own index. */
    uint64_t tail0 = __atomic_load_n(&r->hdr->tail, __ATOMIC_RELAXED);
    uint64_t tail = tail0, head;
    size_t n = 0, used = 0;
    int rc = RING_AGAIN;
    uint32_t len;

    *npopped = 0;
    if (max_records == 0 || buf_len > UINT32_MAX)
        return RING_EINVAL;
    offs[0] = 0;
    if (max_records == 1 && (int64_t)(r->head_cache - tail) > 0) {
        /* Single pop with records already known: use the cached head (rigtorp's
         * writeIdxCache) and leave the producer's cache line alone. */
        head = r->head_cache;
    } else {
        /* Acquire: pairs with the producer's release store of head; every record before it
         * is fully written and visible.  One acquire for the whole batch, always re-read so
         * that a batch takes everything published so far. */
        head = r->head_cache = __atomic_load_n(&r->hdr->head, __ATOMIC_ACQUIRE);
        if (head == tail)
            return RING_AGAIN;
    }
    while (n < max_records) {
        uint64_t t = tail;
        rc = next_record(r, &t, head, &len);
        if (rc != RING_OK) {
            tail = t; /* consumed trailing wrap markers, if any */
            break;
        }
        if (used + len > buf_len || (n > 0 && used + len > max_bytes)) {
            rc = n ? RING_OK : RING_EBUFSIZE;
            break;
        }
        memcpy(buf + used, r->data + (t & r->mask) + RING_REC_HDR, len);
        used += len;
        offs[++n] = (uint32_t)used;
        tail = t + rec_size(len);
    }
    *npopped = n;
    if (tail != tail0) {
        /* Release: one store hands every byte copied out above (and any wrap area skipped)
         * back to the producer; our reads are ordered before it (pairs with the producer's
         * acquire load of tail). */
        __atomic_store_n(&r->hdr->tail, tail, __ATOMIC_RELEASE);
        if (writer_needs_wake(r)) {
            if (n || rc == RING_AGAIN)
                return RING_OK_WAKE; /* possibly with 0 records: only a wrap marker went */
            /* Error with nothing returned: put the flag back so the wake is not lost. */
            __atomic_store_n(&r->hdr->writer_waiting, 1, __ATOMIC_RELAXED);
        }
    }
    return n ? RING_OK : rc;
}

int ring_peek_many(ring_t *r, size_t max_bytes, uint64_t *offs, size_t max_records,
                   size_t *npeeked, uint64_t *new_tail)
{
    /* Relaxed: our own index. */
    uint64_t tail0 = __atomic_load_n(&r->hdr->tail, __ATOMIC_RELAXED);
    uint64_t tail = tail0, head;
    size_t n = 0, used = 0;
    int rc = RING_OK;
    uint32_t len;

    *npeeked = 0;
    *new_tail = tail0;
    if (max_records == 0)
        return RING_EINVAL;
    /* Acquire: pairs with the producer's release store of head (see ring_pop_many); the
     * records before it stay put until we release tail in ring_release. */
    head = r->head_cache = __atomic_load_n(&r->hdr->head, __ATOMIC_ACQUIRE);
    while (n < max_records) {
        uint64_t t = tail;
        rc = next_record(r, &t, head, &len);
        if (rc != RING_OK) {
            tail = t; /* trailing wrap markers, if any */
            break;
        }
        if (n > 0 && used + len > max_bytes)
            break;
        offs[2 * n] = RING_HDR_SIZE + (t & r->mask) + RING_REC_HDR; /* from the mapping base */
        offs[2 * n + 1] = offs[2 * n] + len;
        used += len;
        n++;
        tail = t + rec_size(len);
    }
    *npeeked = n;
    *new_tail = tail;
    if (n == 0 && rc == RING_ECORRUPT)
        return RING_ECORRUPT;
    return tail != tail0 ? RING_OK : RING_AGAIN;
}

int ring_release(ring_t *r, uint64_t new_tail)
{
    /* Relaxed: our own index. */
    uint64_t tail = __atomic_load_n(&r->hdr->tail, __ATOMIC_RELAXED);
    if (new_tail - tail > r->head_cache - tail || (new_tail % RING_ALIGN))
        return RING_EINVAL;
    /* Release: the caller's copies out of the peeked records happen before the producer may
     * reuse their bytes (pairs with its acquire load of tail). */
    __atomic_store_n(&r->hdr->tail, new_tail, __ATOMIC_RELEASE);
    return writer_needs_wake(r) ? RING_OK_WAKE : RING_OK;
}

int ring_reader_prepare_sleep(ring_t *r)
{
    __atomic_store_n(&r->hdr->reader_waiting, 1, __ATOMIC_RELAXED);
    /* Full fence (StoreLoad): the flag store is ordered before the re-read of head below.
     * Pairs with the fence in reader_needs_wake (store head, fence, load flag): either the
     * producer sees our flag and writes the eventfd, or we see its record here and do not
     * sleep.  This re-check after setting the flag is what prevents a lost wake-up. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* Relaxed: our own index. */
    uint64_t tail = __atomic_load_n(&r->hdr->tail, __ATOMIC_RELAXED);
    /* Acquire: pairs with the producer's release store of head. */
    r->head_cache = __atomic_load_n(&r->hdr->head, __ATOMIC_ACQUIRE);
    if (r->head_cache == tail)
        return RING_OK; /* still empty: sleep */
    ring_reader_cancel_sleep(r);
    return RING_AGAIN; /* data arrived: pop again */
}

void ring_reader_cancel_sleep(ring_t *r)
{
    /* Relaxed: a stale 1 only costs the producer one spurious eventfd write. */
    __atomic_store_n(&r->hdr->reader_waiting, 0, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- checks */

uint64_t ring_used_bytes(const ring_t *r)
{
    /* Acquire (both): a consistent-enough snapshot for statistics; tail first so that
     * head >= tail holds for the two values we read. */
    uint64_t tail = __atomic_load_n(&r->hdr->tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&r->hdr->head, __ATOMIC_ACQUIRE);
    return head - tail;
}

/* For the supervisor after a peer died (ck_ring's validation): the header is intact and every
 * record header in [tail, head) is well formed.  Safe while at most one side is still running:
 * the dead side cannot move its index, and the bytes in [tail, head) are written by nobody. */
int ring_valid(const ring_t *r)
{
    const struct ring_hdr *h = r->hdr;
    uint64_t tail, head;
    uint32_t len;
    if (!header_ok(h, ring_mem_size(r->capacity)) || h->capacity != r->capacity ||
        h->max_record != r->max_record)
        return RING_ECORRUPT;
    /* Acquire: tail before head (both monotonic, tail <= head at every instant), so the
     * snapshot satisfies tail <= head; acquiring head makes the records before it visible. */
    tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    if (head - tail > r->capacity || (head | tail) % RING_ALIGN)
        return RING_ECORRUPT;
    if (__atomic_load_n(&h->reader_waiting, __ATOMIC_RELAXED) > 1 ||
        __atomic_load_n(&h->writer_waiting, __ATOMIC_RELAXED) > 1)
        return RING_ECORRUPT;
    while (tail != head) {
        int rc = next_record(r, &tail, head, &len);
        if (rc == RING_AGAIN)
            break; /* trailing wrap marker */
        if (rc != RING_OK)
            return RING_ECORRUPT;
        tail += rec_size(len);
    }
    return RING_OK;
}

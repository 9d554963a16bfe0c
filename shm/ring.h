/*
 * Single-producer/single-consumer ring of variable-length records in shared memory.
 *
 * Layout of the mapping (RING_HDR_SIZE + capacity bytes):
 *
 *   line 0  magic, version, hdr_size, capacity, max_record   (written once by ring_init)
 *   line 1  head            written by the producer only
 *   line 2  tail            written by the consumer only
 *   line 3  reader_waiting  set by a consumer about to sleep, cleared by whoever wakes it
 *   line 4  writer_waiting  set by a producer about to sleep, cleared by whoever wakes it
 *   data    capacity bytes (a power of two)
 *
 * head and tail are free-running 64-bit byte counters, masked by capacity - 1 to index the data.
 * A record is a 4-byte little-endian length followed by the payload, padded so that the next
 * record starts on an 8-byte boundary.  When a record does not fit before the end of the data
 * area, the producer writes a RING_WRAP length there and the record goes at offset 0.
 * A record is published only by the release-store of head after all its bytes are written, so a
 * producer killed mid-push leaves the ring valid: the partial record is never seen.
 *
 * The process-local ring_t caches the other side's index (rigtorp/SPSCQueue) so the shared
 * line of the peer is only touched when the cached value says full/empty.
 *
 * Status codes: RING_OK (0) success; RING_OK_WAKE (1) success and the peer is asleep and must be
 * woken (its eventfd written); RING_AGAIN (-1) full/empty; RING_TOO_BIG (-2) record larger than
 * max_record; RING_EINVAL (-3) bad argument; RING_ECORRUPT (-4) bad header or record;
 * RING_EBUFSIZE (-5) caller buffer too small for the next record.
 */
#ifndef AMQPBROKER_SHM_RING_H
#define AMQPBROKER_SHM_RING_H

#include <stddef.h>
#include <stdint.h>

#define RING_MAGIC 0x31474e4952514d41ULL /* "AMQRING1" read as a little-endian u64 */
#define RING_VERSION 1
#define RING_CACHELINE 64
#define RING_HDR_SIZE 512
#define RING_REC_HDR 4
#define RING_ALIGN 8
#define RING_WRAP 0xFFFFFFFFu
#define RING_MIN_CAPACITY 64
#define RING_MAX_CAPACITY (1ULL << 32)

enum ring_status {
    RING_OK = 0,
    RING_OK_WAKE = 1,
    RING_AGAIN = -1,
    RING_TOO_BIG = -2,
    RING_EINVAL = -3,
    RING_ECORRUPT = -4,
    RING_EBUFSIZE = -5,
};

struct ring_hdr {
    /* line 0: immutable after ring_init (magic is stored last, with release) */
    uint64_t magic;
    uint32_t version;
    uint32_t hdr_size;
    uint64_t capacity;
    uint64_t max_record;
    uint8_t _pad0[RING_CACHELINE - 32];
    /* line 1: producer index */
    _Alignas(RING_CACHELINE) uint64_t head;
    uint8_t _pad1[RING_CACHELINE - 8];
    /* line 2: consumer index */
    _Alignas(RING_CACHELINE) uint64_t tail;
    uint8_t _pad2[RING_CACHELINE - 8];
    /* line 3: consumer wants a wake-up when head moves */
    _Alignas(RING_CACHELINE) uint32_t reader_waiting;
    uint8_t _pad3[RING_CACHELINE - 4];
    /* line 4: producer wants a wake-up when tail moves */
    _Alignas(RING_CACHELINE) uint32_t writer_waiting;
    uint8_t _pad4[RING_CACHELINE - 4];
};

/* Process-local handle: never placed in shared memory. */
typedef struct ring {
    struct ring_hdr *hdr;
    uint8_t *data;
    uint64_t capacity;
    uint64_t mask;
    uint64_t max_record;
    uint64_t tail_cache; /* producer's cached copy of hdr->tail (<= the real tail) */
    uint64_t head_cache; /* consumer's cached copy of hdr->head (<= the real head) */
} ring_t;

size_t ring_mem_size(uint64_t capacity);
uint64_t ring_max_record_for(uint64_t capacity);
int ring_init(void *mem, size_t mem_size, uint64_t capacity);
int ring_attach(ring_t *r, void *mem, size_t mem_size);

/* producer */
int ring_push(ring_t *r, const void *data, size_t len);
int ring_push_many(ring_t *r, const uint8_t *data, const uint32_t *lens, size_t n,
                   size_t *npushed);
/* Zero-copy producer: reserve the leading records of lens[0..n) that fit (headers written,
 * payload offsets from the mapping base in offs[i]), write the payloads there, then
 * ring_commit(r, *new_head) publishes them with one release store. RING_OK if at least one
 * record was reserved, else RING_AGAIN (full) or RING_TOO_BIG (lens[0] > max_record). */
int ring_reserve_many(ring_t *r, const uint32_t *lens, size_t n, uint64_t *offs,
                      size_t *nreserved, uint64_t *new_head);
int ring_commit(ring_t *r, uint64_t new_head);
void ring_commit_quiet(ring_t *r, uint64_t new_head);
int ring_can_push(ring_t *r, size_t len);
int ring_writer_prepare_sleep(ring_t *r, size_t len);
void ring_writer_cancel_sleep(ring_t *r);

/* consumer */
int ring_pop_many(ring_t *r, uint8_t *buf, size_t buf_len, size_t max_bytes, uint32_t *offs,
                  size_t max_records, size_t *npopped);
/* Zero-copy variant: offsets (from the mapping base) of up to max_records records as
 * [start, end) pairs in offs[2 * max_records]; tail moves only when the caller, having copied
 * them out, calls ring_release(r, *new_tail).  RING_OK if new_tail moved (even with 0 records,
 * when only a wrap marker lay before head). */
int ring_peek_many(ring_t *r, size_t max_bytes, uint64_t *offs, size_t max_records,
                   size_t *npeeked, uint64_t *new_tail);
int ring_release(ring_t *r, uint64_t new_tail);
int ring_reader_prepare_sleep(ring_t *r);
void ring_reader_cancel_sleep(ring_t *r);

/* either side / supervisor */
int ring_valid(const ring_t *r);
uint64_t ring_used_bytes(const ring_t *r);

#endif

/* Two-thread check of shm/ring.c under ThreadSanitizer / ASan+UBSan (not part of the build):
 *   make -C shm/ctest            (runs both)
 * A producer thread pushes N sequence-numbered records of varying sizes (single and batch
 * pushes, and batches reserved, written in place and committed); the consumer pops them (ring_pop_many and ring_peek_many + ring_release) and checks
 * order and contents.  TSan reports any access pair not ordered by the acquire/release
 * protocol; the wake-up flags are exercised with a spinning stand-in for the eventfd. */
#include "../ring.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 300000u
#define CAP (1u << 14)

static uint8_t mem[RING_HDR_SIZE + CAP] __attribute__((aligned(64)));
static int wakes_reader, wakes_writer;

static uint32_t rec_len(uint32_t seq) { return 4 + (seq * 2654435761u) % 600; }

static void fill(uint8_t *p, uint32_t seq, uint32_t len)
{
    memcpy(p, &seq, 4);
    for (uint32_t i = 4; i < len; i++)
        p[i] = (uint8_t)(seq + i);
}

static void check(const uint8_t *p, uint32_t seq, uint32_t len)
{
    uint32_t s;
    memcpy(&s, p, 4);
    if (s != seq || len != rec_len(seq)) {
        fprintf(stderr, "bad record: got seq %u len %u, want %u\n", s, len, seq);
        abort();
    }
    for (uint32_t i = 4; i < len; i++)
        if (p[i] != (uint8_t)(seq + i)) {
            fprintf(stderr, "bad byte in record %u\n", seq);
            abort();
        }
}

static void *producer(void *arg)
{
    ring_t r;
    uint8_t buf[8 * 608];
    uint32_t lens[8];
    if (ring_attach(&r, mem, sizeof mem))
        abort();
    for (uint32_t seq = 0; seq < N;) {
        int rc;
        if (seq % 3 == 2) {
            /* zero-copy: reserve, write each payload in place, commit */
            size_t n = 0, k;
            uint64_t offs[8], head;
            for (; n < 8 && seq + n < N; n++)
                lens[n] = rec_len(seq + (uint32_t)n);
            rc = ring_reserve_many(&r, lens, n, offs, &k, &head);
            if (rc == RING_OK) {
                for (size_t i = 0; i < k; i++)
                    fill(mem + offs[i], seq + (uint32_t)i, lens[i]);
                rc = ring_commit(&r, head);
                seq += (uint32_t)k;
            }
        } else if (seq % 3) {
            uint32_t len = rec_len(seq);
            fill(buf, seq, len);
            rc = ring_push(&r, buf, len);
            if (rc >= 0)
                seq++;
        } else {
            size_t n = 0, off = 0, pushed;
            for (; n < 8 && seq + n < N; n++) {
                lens[n] = rec_len(seq + (uint32_t)n);
                fill(buf + off, seq + (uint32_t)n, lens[n]);
                off += lens[n];
            }
            rc = ring_push_many(&r, buf, lens, n, &pushed);
            seq += (uint32_t)pushed;
        }
        if (rc == RING_OK_WAKE)
            __atomic_fetch_add(&wakes_reader, 1, __ATOMIC_RELAXED);
        if (rc == RING_AGAIN && ring_writer_prepare_sleep(&r, rec_len(seq)) == RING_OK)
            while (__atomic_load_n(&r.hdr->writer_waiting, __ATOMIC_ACQUIRE))
                sched_yield(); /* stand-in for sleeping on the eventfd */
    }
    (void)arg;
    return NULL;
}

static void *consumer(void *arg)
{
    ring_t r;
    static uint8_t buf[1 << 16];
    uint32_t offs[65];
    uint64_t poffs[128], new_tail;
    size_t n;
    if (ring_attach(&r, mem, sizeof mem))
        abort();
    for (uint32_t seq = 0; seq < N;) {
        int rc;
        if (seq & 1) {
            rc = ring_pop_many(&r, buf, sizeof buf, sizeof buf, offs, 64, &n);
            for (size_t i = 0; i < n; i++, seq++)
                check(buf + offs[i], seq, offs[i + 1] - offs[i]);
        } else {
            rc = ring_peek_many(&r, 1 << 20, poffs, 64, &n, &new_tail);
            for (size_t i = 0; i < n; i++, seq++)
                check(mem + poffs[2 * i], seq, (uint32_t)(poffs[2 * i + 1] - poffs[2 * i]));
            if (rc == RING_OK)
                rc = ring_release(&r, new_tail);
        }
        if (rc == RING_OK_WAKE)
            __atomic_fetch_add(&wakes_writer, 1, __ATOMIC_RELAXED);
        if (rc < 0 && rc != RING_AGAIN) {
            fprintf(stderr, "consumer error %d\n", rc);
            abort();
        }
        if (rc == RING_AGAIN && ring_reader_prepare_sleep(&r) == RING_OK)
            while (__atomic_load_n(&r.hdr->reader_waiting, __ATOMIC_ACQUIRE))
                sched_yield();
    }
    if (ring_valid(&r) != RING_OK)
        abort();
    (void)arg;
    return NULL;
}

int main(void)
{
    pthread_t p, c;
    if (ring_init(mem, sizeof mem, CAP))
        abort();
    pthread_create(&c, NULL, consumer, NULL);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    printf("ok: %u records, %d reader wakes, %d writer wakes\n", N, wakes_reader, wakes_writer);
    return 0;
}

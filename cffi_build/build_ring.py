"""Build ``shm._ring``, the CFFI (out-of-line, API mode) binding of shm/ring.c.

Wired into setup.py through ``cffi_modules=["cffi_build/build_ring.py:ffibuilder"]``; for a
quick in-place build during development run ``python cffi_build/build_ring.py``.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
# setuptools wants source paths relative to the project root (the cwd of setup.py).
ROOT = os.path.relpath(os.path.dirname(HERE))
SHM = os.path.join(ROOT, "shm")

ffibuilder = FFI()

ffibuilder.cdef(
    """
    enum ring_status {
        RING_OK = ..., RING_OK_WAKE = ..., RING_AGAIN = ..., RING_TOO_BIG = ...,
        RING_EINVAL = ..., RING_ECORRUPT = ..., RING_EBUFSIZE = ...,
    };
    #define RING_HDR_SIZE ...
    #define RING_MIN_CAPACITY ...
    #define RING_REC_HDR ...
    #define RING_ALIGN ...
    #define RING_VERSION ...

    struct ring_hdr {
        uint64_t magic; uint32_t version; uint32_t hdr_size; uint64_t capacity;
        uint64_t max_record; uint64_t head; uint64_t tail;
        uint32_t reader_waiting; uint32_t writer_waiting;
        ...;
    };
    typedef struct ring {
        struct ring_hdr *hdr;
        uint64_t capacity;
        uint64_t max_record;
        ...;
    } ring_t;

    size_t ring_mem_size(uint64_t capacity);
    uint64_t ring_max_record_for(uint64_t capacity);
    int ring_init(void *mem, size_t mem_size, uint64_t capacity);
    int ring_attach(ring_t *r, void *mem, size_t mem_size);

    int ring_push(ring_t *r, const void *data, size_t len);
    int ring_push_many(ring_t *r, const uint8_t *data, const uint32_t *lens, size_t n,
                       size_t *npushed);
    int ring_reserve_many(ring_t *r, const uint32_t *lens, size_t n, uint64_t *offs,
                          size_t *nreserved, uint64_t *new_head);
    int ring_commit(ring_t *r, uint64_t new_head);
    void ring_commit_quiet(ring_t *r, uint64_t new_head);
    int ring_can_push(ring_t *r, size_t len);
    int ring_writer_prepare_sleep(ring_t *r, size_t len);
    void ring_writer_cancel_sleep(ring_t *r);

    int ring_pop_many(ring_t *r, uint8_t *buf, size_t buf_len, size_t max_bytes,
                      uint32_t *offs, size_t max_records, size_t *npopped);
    int ring_peek_many(ring_t *r, size_t max_bytes, uint64_t *offs, size_t max_records,
                       size_t *npeeked, uint64_t *new_tail);
    int ring_release(ring_t *r, uint64_t new_tail);
    int ring_reader_prepare_sleep(ring_t *r);
    void ring_reader_cancel_sleep(ring_t *r);

    int ring_valid(const ring_t *r);
    uint64_t ring_used_bytes(const ring_t *r);
    """
)

ffibuilder.set_source(
    "shm._ring",
    '#include "ring.h"',
    sources=[os.path.join(SHM, "ring.c")],
    include_dirs=[SHM],
    depends=[os.path.join(SHM, "ring.h")],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    import glob

    ffibuilder.compile(tmpdir=ROOT, verbose=True)
    for obj in glob.glob(os.path.join(SHM, "*.o")):  # keep the source tree clean
        os.remove(obj)

"""Instructions per record crossing of the ring link's codec, for callgrind.

Packs a ``Pubs`` and a ``Dlvs`` of 256 records each (``--size``-byte bodies, timestamps
shared by runs of 50 as a read's publishes share one) as the ring link does
(``contract.size_many`` + ``write_many`` into a buffer) and decodes them where they lie
(``decode_many``), ``N`` times. Run it under callgrind with N and with 0 and divide the
difference by N x 512: instructions per record packed and unpacked, which the machine's load
does not change (CPU time on a shared 2-core box swings by 15 %, bench/RING_RESULTS.md):

    PY=$(python -c 'import sys; print(sys.executable)')   # the interpreter, not a pyenv shim
    for n in 0 40; do PYTHONPATH=<checkout> valgrind --tool=callgrind \
        --callgrind-out-file=/dev/null $PY bench/codec_instructions.py $n 16 2>&1 | grep Collected; done
"""
from __future__ import annotations

import array
import sys

from amqpbroker.contract import Dlvs, Pubs, decode_many, size_many, write_many
from amqpbroker.storage.record import Record


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    recs = [Record(1_700_000_000_000 + i // 50, "", "q1", b"\x10\x00\x02", b"x" * size, 0)
            for i in range(256)]
    msgs = [Pubs(qid=1, seq=5, priority=0, track=False, flags=0, records=recs),
            Dlvs(cid=1, qid=2, offset=100, records=recs)]
    buf = bytearray(1 << 20)
    for _ in range(n):
        sized, lens, count = size_many(msgs, b"\x00", 1 << 20)
        first, second = array.array("I", bytes(lens))
        write_many(sized, buf, array.array("Q", [0, first]).tobytes(), count)
        offs = array.array("Q", [0, first, first, first + second]).tobytes()
        out = decode_many(buf, offs, 2, None)
    if n:               # a Dlvs' records decode as a RecordRun (contract ``run``): checked once
        assert len(out[1].records) == 256 and list(out[1].records)[5].body == recs[5].body


if __name__ == "__main__":
    main()

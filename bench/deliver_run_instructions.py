"""Instructions per delivery of a front-end's half of a ``Dlvs``, for callgrind.

A worker's dispatch run to one consumer reaches the front-end as one ring record (``Dlvs``).
This decodes one of 256 records (``--size``-byte bodies) where it lies, as the ring link does
(``contract.decode_many``), then writes its ``basic.deliver`` frames and the channel's unacked
entries, ``N`` times, in one of two ways:

* ``records``: as before the ``run`` field type: the records decoded as a ``Record`` each
  (the ``records`` codec, fmt ``IIQ*``), then ``Channel._send_lot``'s loop (a C frame
  builder call and an unacked tuple per delivery, in Python);
* ``run``: as now: the records kept as their bytes (``RecordRun``), every frame built by one
  C call (``fastpath.build_deliver_run``) and the unacked entries added by one
  ``dict.update`` (``Channel._send_run``).

Run it under callgrind with N and with 0 and divide the difference by N x 256: instructions
per delivery, which the machine's load does not change:

    PY=$(python -c 'import sys; print(sys.executable)')
    for mode in records run; do for n in 0 40; do valgrind --tool=callgrind \
        --callgrind-out-file=/dev/null $PY bench/deliver_run_instructions.py $mode $n 16 2>&1 \
        | grep Collected; done; done
"""
from __future__ import annotations

import array
import sys
from itertools import count, repeat

from amqpbroker.contract import HOT_DECODE, Dlvs, decode_many, encode_bytes
from amqpbroker.protocol import fastpath as fp
from amqpbroker.storage.record import Record, RecordRun, unpack_messages

RECORDS = 256
CTAG, FRAME_MAX = b"ctag-1.amq.gen-abcdefghijklmnop", 131072


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "run"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    recs = [Record(1_700_000_000_000 + i // 50, "", "q1", b"\x10\x00\x02", b"x" * size, 0)
            for i in range(RECORDS)]
    data = encode_bytes(Dlvs(cid=1, qid=2, offset=100, records=recs), b"\x00")
    offs = array.array("Q", [0, len(data)]).tobytes()
    as_records = {Dlvs.TYPE_ID: ("IIQ*", Dlvs)}         # the codec before ``run``
    assert HOT_DECODE[Dlvs.TYPE_ID][0] == "IIQ#"
    q, consumer, epoch = object(), object(), 0
    unacked: dict = {}
    build_c, small = fp._build_deliver_c, fp.COPY_BODY_BELOW
    out = []
    for _ in range(n):
        unacked.clear()
        tag = 1
        if mode == "records":
            [m] = unpack_messages(data, offs, 1, as_records, Record, None)
            frames: list = []
            append = frames.append
            for offset, rec in zip(count(m.offset), m.records):
                unacked[tag] = (q, offset, consumer, epoch)
                body = rec.body
                if len(body) < small:
                    append(build_c(1, CTAG, tag, False, rec.exchange, rec.routing_key,
                                   rec.properties, body, FRAME_MAX))
                else:
                    frames += fp.build_deliver(1, CTAG, tag, False, rec.exchange,
                                               rec.routing_key, rec.properties, body, FRAME_MAX)
                tag += 1
        else:
            [m] = decode_many(data, offs, 1, None)
            run = m.records
            frames = fp.build_deliver_run(1, CTAG, tag, run.data, run.count, FRAME_MAX, small)
            unacked.update(zip(range(tag, tag + run.count),
                               zip(repeat(q), count(m.offset), repeat(consumer), repeat(epoch))))
        out = frames
    if n:                       # both ways write the same frames and entries
        assert len(unacked) == RECORDS
        assert b"".join(out) == b"".join(fp.build_deliver_run_py(
            1, CTAG, 1, RecordRun.of(recs).data, RECORDS, FRAME_MAX, small))


if __name__ == "__main__":
    main()

"""Instructions per publish of a worker's half of a ``Pubs``, for callgrind.

A front-end's publishes of one read to one queue reach the worker as one ring record
(``Pubs``). This decodes one of 256 records (``--size``-byte bodies, persistent) where it
lies, as the ring link does (``contract.decode_many``), hands it to the partition host
(``PartitionHost.handle``: the queue appends it, the confirm bookkeeping) and writes the
queue's buffered batch to its segment (``MessageStore.flush``, what the commit round does
before its fsync), ``N`` times, in one of two ways:

* ``records``: as before the ``run`` field type for ``Pubs``: the records decoded as a
  ``Record`` each (fmt ``IQB?B*``), kept so in the store, and encoded again by the log;
* ``run``: as now: the records kept as the bytes they came in (``RecordRun`` ->
  ``StoredRun``), the log appending those bytes.

With a fourth argument ``cycle``: the worker's whole cycle of a message in pubsub_e2e
instead: a non-durable queue with one consumer (the ``Dlvs`` of each dispatch run encoded as
the ring link encodes it), the multiple ack of the 256, then the commit round's write
(write-behind: the settled records, bodiless from ``ELIDE_BODY`` on, when due).

Run it under callgrind with N and with 0 and divide the difference by N x 256: instructions
per publish, which the machine's load does not change:

    PY=$(python -c 'import sys; print(sys.executable)')
    for mode in records run; do for n in 0 40; do valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null $PY bench/pubs_store_instructions.py $mode $n 16 2>&1 \\
        | grep Collected; done; done
"""
from __future__ import annotations

import array
import asyncio
import sys
import tempfile

from amqpbroker import contract as c
from amqpbroker.config import Config
from amqpbroker.storage.record import Record, unpack_messages
from amqpbroker.worker.host import PartitionHost

RECORDS = 256


class Link:
    def emit(self, event) -> None:
        if type(event) is c.Dlvs:       # as the ring link encodes it (into the ring)
            c.encode_bytes(event, b"\x00")


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "run"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    cycle = len(sys.argv) > 4 and sys.argv[4] == "cycle"
    recs = [Record(1_700_000_000_000 + i // 50, "", "q1", b"\x10\x00\x02", b"x" * size,
                   0 if cycle else 1) for i in range(RECORDS)]
    as_records = {c.Pubs.TYPE_ID: ("IQB?B*", c.Pubs)}    # the codec before ``run``
    assert c.HOT_DECODE[c.Pubs.TYPE_ID][0] == "IQB?B#"
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        host = PartitionHost(Config(data_dir=tmp, cache_limit=1 << 40), loop)
        state = host.attach(Link())
        host.handle(state, [c.Open(req=0, qid=1, vhost="/", name="q1", durable=not cycle,
                                   auto_delete=False, arguments={"x-fsync": "never"},
                                   directory=f"{tmp}/q1")])
        if cycle:
            host.handle(state, [c.Sub(req=0, qid=1, cid=1, tag="ctag", no_ack=False,
                                      exclusive=False, arguments={}, credit=1 << 40)])
            loop.run_until_complete(asyncio.sleep(0))      # the dispatch its arrival asked
        q = host.queues[1]
        data = c.encode_bytes(c.Pubs(qid=1, seq=1, priority=0, track=True, flags=0,
                                     records=recs), b"\x00")
        offs = array.array("Q", [0, len(data)]).tobytes()
        for _ in range(n):
            if mode == "records":
                [m] = unpack_messages(data, offs, 1, as_records, Record, None)
            else:
                [m] = c.decode_many(data, offs, 1, None)
            host.handle(state, [m])
            if cycle:
                first = q.store.next_offset - RECORDS
                host.handle(state, [c.Ack(qid=1, seq=0, offsets=list(range(first,
                                                                          first + RECORDS)))])
            q.store.flush()
        if n and cycle:
            assert q.ready_count == 0 and not q.outstanding
        elif n:                     # both ways store the same records
            assert q.store.log.read(0, RECORDS, 1 << 30)[-1] == (RECORDS - 1, recs[-1])
        host.close()
    loop.close()


if __name__ == "__main__":
    main()

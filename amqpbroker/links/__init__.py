"""The partition interface: how the connection side of the broker talks to the queues.

Theory of operation
-------------------
A *front-end* owns connections, channels, routing and metadata; a *partition host* (a worker
process, or the front-end's own process with ``--workers 0``) owns queues: their logs, ready
lists, consumers (as credit-holding ``Subscription``\\ s), unacked offsets and group commit.
They talk only in messages — tuples whose first item names the operation — over a *link*:

    front-end  --commands-->  host          host  --events-->  front-end
    open, pub, sub, unsub,                  dlv (a delivery), confirm (a watermark of
    credit, ack, reject, get,               publish sequence numbers, plus nacks), reply,
    purge, stats, delete, touch, close      flow, cancel, gone, dlx, alarm

``LocalLink`` calls the other side directly; ``RingLink`` encodes each message as bytes and
passes it through a pair of shared-memory rings (``shm/``). The broker logic is the same in
both cases: ``PartitionClient`` (front-end) and ``PartitionHost`` (worker) do not know which
link joins them.

Three rules keep it simple:

* *Publishes are numbered per link.* The host confirms with a watermark ("every publish up to
  N is settled") once the commit round that wrote them is fsynced, plus the numbers it
  refused (``x-overflow: reject-publish``). A channel's confirm waits for the watermark of
  every host its message went to.
* *Deliveries are paid for with credit.* A subscription starts with ``prefetch`` credits (or a
  window for unlimited consumers); the front-end returns one per ack (prefetch) or per
  delivery written to the socket (no prefetch). So the host never floods a link.
* *Requests stop the connection.* A method that needs the host's answer (declare-ok counts,
  get, purge, delete, consume) makes the session stop reading that connection until the
  reply arrives, so per-connection ordering holds without asynchronous channel code.
"""

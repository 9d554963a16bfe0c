"""Links: how a front-end reaches the partition hosts that own its queues.

Theory of operation
-------------------
A *front-end* owns connections, channels, routing and a copy of the metadata; a *partition
host* (a worker process, or the front-end's own process with ``--workers 0``) owns queues:
their logs, ready lists, consumers (as credit-holding ``Subscription``\\ s), unacked offsets
and group commit. They talk only in the messages of ``amqpbroker/contract.py`` over a
*link*:

    front-end  --commands-->  host          host  --events-->  front-end
    open, pub, sub, unsub,                  dlv (a delivery), confirm (a watermark of
    credit, ack, reject, get,               publish numbers, plus nacks), reply,
    purge, stats, delete, touch, close      flow, cancel, gone, dlx, alarm

``local.LocalLink`` calls the other side directly (``--workers 0``); ``ring.RingEndpoint``
passes the encoded messages through a pair of shared-memory rings (``shm/``) between
processes; ``tcp.StreamEndpoint`` passes the same bytes over a TCP stream (to another node).
``PartitionClient`` (front-end) and ``PartitionHost`` (worker) do not know which link joins
them. ``control.ControlChannel`` carries the control messages between the supervisor and
its children.

Three rules keep it simple:

* *Publishes are numbered per link.* The host confirms with a watermark ("every publish up to
  N is settled") once the commit round that wrote them is fsynced, plus the numbers it
  refused (``x-overflow: reject-publish``, or a publish whose handling failed). A channel's
  confirm waits for the watermark of every host its message went to.
* *Deliveries are paid for with credit.* A subscription starts with ``prefetch`` credits (or a
  window for unlimited consumers); the front-end returns one per ack (prefetch) or per
  delivery written to the socket (no prefetch). So the host never floods a link.
* *Requests stop the connection.* A method that needs the host's answer (declare-ok counts,
  get, purge, delete, consume) makes the session stop reading that connection until the
  reply arrives, so per-connection ordering holds without asynchronous channel code.
"""

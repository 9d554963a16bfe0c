"""What a federated message and a propagated binding carry, as RabbitMQ 3.10's federation
plugin writes and reads it (``rabbit_federation_util``, ``rabbit_federation_exchange_link``,
``rabbit_federation_queue_link``). Pure: tables in, tables out.

* A message a link moves gets an ``x-received-from`` header, a list of tables, newest first:
  the upstream's ``uri`` (without credentials), its ``exchange`` (or ``queue``),
  ``redelivered``, and the upstream broker's ``cluster-name`` and ``vhost``.
* Exchange federation forwards a message only while that list is shorter than the link's
  ``max-hops`` and does not already name the downstream (its cluster name and vhost): the
  upstream's ``x-federation-upstream`` exchange checks this (``should_forward``), and the
  link again (an upstream without that exchange type gets a fanout one).
* A downstream binding is repeated upstream with an ``x-bound-from`` argument (the
  downstream's cluster name, vhost, exchange and the hops left), so bindings travel as far
  as messages may come back: a binding that already came through a link travels on with one
  hop less, and not at all once none is left or it would return to where it came from.
"""
from __future__ import annotations

RECEIVED_FROM = "x-received-from"
BOUND_FROM = "x-bound-from"
MAX_HOPS = "x-max-hops"
DOWNSTREAM_NAME = "x-downstream-name"
DOWNSTREAM_VHOST = "x-downstream-vhost"


def _entries(value) -> list:
    return value if isinstance(value, list) else []


def already_seen(cluster: str, vhost: str, entries: list) -> bool:
    return any(isinstance(e, dict) and e.get("cluster-name") == cluster
               and e.get("vhost") == vhost for e in entries)


def should_forward(headers: dict | None, max_hops: int, cluster: str, vhost: str) -> bool:
    """RabbitMQ's ``should_forward``: a message that has not yet made ``max_hops`` hops and
    has not been to (``cluster``, ``vhost``)."""
    if not headers or not isinstance(headers.get(RECEIVED_FROM), list):
        return True
    entries = headers[RECEIVED_FROM]
    return len(entries) < max_hops and not already_seen(cluster, vhost, entries)


def received_from(headers: dict | None, entry: dict) -> dict:
    """The message's headers with ``entry`` put first in its ``x-received-from``."""
    out = dict(headers or {})
    out[RECEIVED_FROM] = [entry, *_entries(out.get(RECEIVED_FROM))]
    return out


def exchange_entry(uri: str, exchange: str, redelivered: bool, cluster: str | None,
                   vhost: str) -> dict:
    """An exchange link's ``x-received-from`` entry (RabbitMQ's keys and order)."""
    entry = {"uri": uri, "exchange": exchange, "redelivered": redelivered}
    if cluster is not None:
        entry["cluster-name"] = cluster
    entry["vhost"] = vhost
    return entry


def bound_upstream(arguments: dict | None, max_hops: int, upstream_cluster: str | None,
                   upstream_vhost: str, cluster: str, vhost: str,
                   exchange_label: str) -> dict | None:
    """The arguments a downstream binding is repeated upstream with (RabbitMQ's
    ``update_binding``), or None: it does not travel to that upstream. ``exchange_label``
    is the downstream's ``"vhost:exchange A"``."""
    arguments = dict(arguments or {})
    previous = arguments.get(BOUND_FROM)
    if isinstance(previous, list) and previous:
        first = previous[0] if isinstance(previous[0], dict) else {}
        hops = first.get("hops", 0)
        hops = hops if isinstance(hops, int) and not isinstance(hops, bool) else 0
        hops = 0 if already_seen(upstream_cluster, upstream_vhost, previous) \
            else min(hops - 1, max_hops)
    else:
        previous, hops = [], max_hops
    if hops <= 0:
        return None
    arguments[BOUND_FROM] = [{"cluster-name": cluster, "vhost": vhost,
                              "exchange": exchange_label, "hops": hops}, *previous]
    return arguments


def queue_headers(headers: dict | None, entry: dict, exchange: str,
                  routing_key: str) -> dict:
    """A queue link's headers (RabbitMQ's ``update_headers``): the first move records
    ``x-original-exchange`` and ``x-original-routing-key``; each move puts ``entry`` with a
    ``visit-count`` first in ``x-received-from`` (an earlier visit to the same upstream
    queue is taken out and counted); a ``CC`` header becomes ``x-original-cc``."""
    out = dict(headers or {})
    been = out.get(RECEIVED_FROM)
    count = 0
    if isinstance(been, list):
        keys = ("uri", "virtual_host", "queue")
        same = [e for e in been if isinstance(e, dict)
                and all(e.get(k) == entry.get(k) for k in keys)]
        if same:
            n = same[0].get("visit-count")
            count = n if isinstance(n, int) and not isinstance(n, bool) else 0
        been = [e for e in been if e not in same]
    else:
        out["x-original-exchange"] = exchange
        out["x-original-routing-key"] = routing_key
        been = []
    if "CC" in out:
        out["x-original-cc"] = out.pop("CC")
    out[RECEIVED_FROM] = [{**entry, "visit-count": count + 1}, *been]
    return out

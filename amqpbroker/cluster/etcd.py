"""An asyncio client for etcd v3, over etcd's JSON gateway (``/v3/...``) and aiohttp.

Why the gateway and not gRPC (``aetcd``): every etcd 3.4+ serves it on its client port, it
needs no dependency we do not already have (aiohttp serves the management API), and it is
what Patroni's ``etcd3`` module and LavinMQ's clustering speak. The layers above need little
of etcd, and all of it is here:

- ``put`` / ``get`` / ``range`` (a prefix) / ``delete``: keys and values are bytes on the
  wire (base64 in the JSON, as the gateway wants) and ``str`` here; a key-value comes back as
  a ``KeyValue`` with its ``create_revision`` (the election's order) and ``lease``.
- ``create``: a transaction that puts a key only if it does not exist yet (compare
  ``create_revision == 0``), the compare-and-swap the election recipe starts with;
  ``txn`` takes any compares and operations for the layers that come next (the ISR's
  compare-and-swap on the leader epoch).
- leases: ``grant``, ``keep_alive`` (one renewal; the caller runs the loop, because what to
  do when renewals stop, fencing, is its business), ``revoke``.
- ``watch``: an async iterator of ``(revision, events)`` from a start revision, over the
  gateway's streamed response (one JSON object per line). It ends with ``EtcdError`` when the
  stream breaks or the revision was compacted; the caller lists again and watches from the
  listing's revision (list-then-watch, as Kubernetes' reflector does).

Several endpoints may be given (``http://a:2379,http://b:2379``): a request that cannot reach
one tries the next, and the one that answered is used first from then on. Every request has a
timeout (``timeout``), so a stopped etcd (SIGSTOP) is an error after that long, not a hang.
"""
from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

import aiohttp


class EtcdError(Exception):
    """etcd could not be reached, or refused the request (its message says which)."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Event:
    type: str                   # "PUT" or "DELETE"
    kv: KeyValue


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that makes a range of every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return raw.decode()


def _kv(d: dict) -> KeyValue:
    return KeyValue(key=_unb64(d.get("key")), value=_unb64(d.get("value")),
                    create_revision=int(d.get("create_revision", 0)),
                    mod_revision=int(d.get("mod_revision", 0)), lease=int(d.get("lease", 0)))


def put_op(key: str, value: str, lease: int = 0) -> dict:
    """A put, as one operation of ``txn``."""
    req = {"key": _b64(key), "value": _b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def range_op(key: str, prefix: bool = False) -> dict:
    req = {"key": _b64(key)}
    if prefix:
        req["range_end"] = _b64(prefix_end(key))
    return {"request_range": req}


def delete_op(key: str, prefix: bool = False) -> dict:
    req = {"key": _b64(key)}
    if prefix:
        req["range_end"] = _b64(prefix_end(key))
    return {"request_delete_range": req}


def kvs_of(response: dict) -> list[KeyValue]:
    """The key-values of one ``range_op`` response of a ``txn``."""
    return [_kv(d) for d in response.get("response_range", {}).get("kvs", [])]


def compare(key: str, target: str, result: str, value) -> dict:
    """A compare of ``txn``: target ``VERSION``, ``CREATE``, ``MOD``, ``VALUE`` or ``LEASE``;
    result ``EQUAL``, ``NOT_EQUAL``, ``GREATER`` or ``LESS``."""
    field = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
             "VALUE": "value", "LEASE": "lease"}[target]
    return {"key": _b64(key), "target": target, "result": result,
            field: _b64(value) if target == "VALUE" else str(value)}


class EtcdClient:
    def __init__(self, endpoints: str | list[str], timeout: float = 2.0):
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, path: str, body: dict, timeout: float | None = None) -> dict:
        """POST ``/v3/<path>`` to the first endpoint that answers; the answer's JSON."""
        errors = []
        for i, base in enumerate(list(self.endpoints)):
            try:
                async with self._http().post(
                        f"{base}/v3/{path}", json=body,
                        timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                errors.append(f"{base}: {type(exc).__name__} {exc}".rstrip())
                continue
            if i:       # this one answered: ask it first next time
                self.endpoints.insert(0, self.endpoints.pop(i))
            # a streamed answer (lease/keepalive) is one JSON object per line
            try:
                data = json.loads(text.splitlines()[0]) if text.strip() else {}
            except ValueError:
                raise EtcdError(f"{path}: not an etcd answer ({resp.status}): "
                                f"{text[:200]!r}") from None
            if resp.status != 200 or "error" in data:
                raise EtcdError(f"{path}: {data.get('message') or data.get('error') or text}")
            return data.get("result", data)
        raise EtcdError("no etcd endpoint answered: " + "; ".join(errors))

    # ------------------------------------------------------------ keys
    async def put(self, key: str, value: str, lease: int = 0) -> int:
        """Put; the revision it made."""
        data = await self.call("kv/put", put_op(key, value, lease)["request_put"])
        return int(data["header"]["revision"])

    async def get(self, key: str) -> KeyValue | None:
        kvs, _ = await self.range(key, prefix=False)
        return kvs[0] if kvs else None

    async def range(self, key: str, prefix: bool = True) -> tuple[list[KeyValue], int]:
        """Every key under ``key`` (or ``key`` alone), and the revision they were read at."""
        data = await self.call("kv/range", range_op(key, prefix)["request_range"])
        return [_kv(d) for d in data.get("kvs", [])], int(data["header"]["revision"])

    async def delete(self, key: str) -> int:
        """Delete ``key``; how many keys went."""
        data = await self.call("kv/deleterange", {"key": _b64(key)})
        return int(data.get("deleted", 0))

    async def txn(self, compares: list[dict], success: list[dict],
                  failure: list[dict] = ()) -> tuple[bool, list[dict]]:
        """If every compare holds, do ``success``, else ``failure``: (held, the responses)."""
        data = await self.call("kv/txn", {"compare": compares, "success": success,
                                          "failure": list(failure)})
        return bool(data.get("succeeded")), data.get("responses", [])

    async def transact(self, compares: list[dict], success: list[dict],
                       failure: list[dict] = ()) -> tuple[bool, list[dict], int]:
        """``txn``, and the revision etcd answered at (the write's own, when it wrote)."""
        data = await self.call("kv/txn", {"compare": compares, "success": success,
                                          "failure": list(failure)})
        return (bool(data.get("succeeded")), data.get("responses", []),
                int(data["header"]["revision"]))

    async def create(self, key: str, value: str, lease: int = 0) -> tuple[bool, KeyValue]:
        """Put ``key`` only if it does not exist: (made it, the key as it now is)."""
        held, responses = await self.txn([compare(key, "CREATE", "EQUAL", 0)],
                                         [put_op(key, value, lease), range_op(key)],
                                         [range_op(key)])
        kvs = responses[-1]["response_range"].get("kvs", [])
        return held, _kv(kvs[0])

    # ------------------------------------------------------------ leases
    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (its id, the TTL etcd granted, which may be more than asked)."""
        data = await self.call("lease/grant", {"TTL": str(ttl)})
        return int(data["ID"]), int(data["TTL"])

    async def keep_alive(self, lease: int, timeout: float | None = None) -> int:
        """Renew the lease once: its TTL from now, or 0 when it has expired or was revoked."""
        data = await self.call("lease/keepalive", {"ID": str(lease)}, timeout)
        return int(data.get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        """End the lease now: every key on it is deleted (a clean leave)."""
        try:
            await self.call("lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "not found" not in str(exc):     # already expired: nothing left to do
                raise

    # ------------------------------------------------------------ watch
    async def watch(self, key: str, start_revision: int, prefix: bool = True):
        """Yield ``(revision, [Event])`` for every change under ``key`` from
        ``start_revision`` on; raise ``EtcdError`` when the stream ends or breaks."""
        create = {"key": _b64(key), "start_revision": str(start_revision)}
        if prefix:
            create["range_end"] = _b64(prefix_end(key))
        errors = []
        for base in list(self.endpoints):
            try:
                # no total timeout: a watch is quiet for as long as nothing changes
                resp = await self._http().post(
                    f"{base}/v3/watch", json={"create_request": create},
                    timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                errors.append(f"{base}: {type(exc).__name__} {exc}".rstrip())
                continue
            async with resp:
                try:
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        data = json.loads(line)
                        if "error" in data:
                            raise EtcdError(f"watch: {data['error'].get('message')}")
                        result = data.get("result", {})
                        if int(result.get("compact_revision", 0)):
                            raise EtcdError("watch: revision compacted")
                        if result.get("canceled"):
                            raise EtcdError(f"watch canceled: {result.get('cancel_reason')}")
                        events = [Event(e.get("type", "PUT"), _kv(e["kv"]))
                                  for e in result.get("events", [])]
                        if events:
                            yield int(result["header"]["revision"]), events
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    raise EtcdError(f"watch broke: {type(exc).__name__} {exc}") from None
            raise EtcdError("watch stream ended")
        raise EtcdError("no etcd endpoint answered: " + "; ".join(errors))

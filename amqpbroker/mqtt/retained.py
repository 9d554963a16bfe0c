"""Retained messages: the last message published with the retain flag to each topic, per
vhost, given to every new subscription whose filter matches it (RabbitMQ's
``rabbit_mqtt_retainer``; a retained message with an empty payload clears the topic).

Kept in memory and in one file per vhost under ``<data-dir>/mqtt``, written (whole, then
renamed over the old one) at most every ``sync_interval`` seconds after a change and at
stop, as RabbitMQ's default DETS store syncs every 2 s: a crash loses at most the last
interval's retained changes, never the file.

RabbitMQ 3.10 looks a subscription's filter up as one exact topic, so ``a/+`` gets nothing
retained; here a filter gets every retained topic it matches, as the MQTT spec asks
(section 3.3.1.3).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os

log = logging.getLogger("amqpbroker.mqtt")


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching: ``+`` is one level, ``#`` the rest (also none); a topic starting
    with ``$`` is not matched by a filter starting with a wildcard."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


class RetainedStore:
    def __init__(self, directory: str, sync_interval: float = 2.0):
        self.directory = directory
        self.sync_interval = sync_interval
        self.vhosts: dict[str, dict[str, tuple[bytes, int]]] = {}   # topic -> (payload, qos)
        self._dirty: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._load()

    def _path(self, vhost: str) -> str:
        return os.path.join(self.directory,
                            f"retained-{hashlib.md5(vhost.encode()).hexdigest()}.json")

    def _load(self) -> None:
        if not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            if not (name.startswith("retained-") and name.endswith(".json")):
                continue
            try:
                with open(os.path.join(self.directory, name)) as f:
                    saved = json.load(f)
                self.vhosts[saved["vhost"]] = {
                    topic: (base64.b64decode(payload), qos)
                    for topic, (payload, qos) in saved["messages"].items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("MQTT retained messages in %s not read: %s", name, exc)

    # ------------------------------------------------------------ use
    def retain(self, vhost: str, topic: str, payload: bytes, qos: int) -> None:
        messages = self.vhosts.setdefault(vhost, {})
        if payload:
            messages[topic] = (bytes(payload), qos)
        elif messages.pop(topic, None) is None:
            return
        self._changed(vhost)

    def matching(self, vhost: str, topic_filter: str) -> list[tuple[str, bytes, int]]:
        messages = self.vhosts.get(vhost, {})
        if "+" not in topic_filter and "#" not in topic_filter:
            found = messages.get(topic_filter)
            return [(topic_filter, *found)] if found else []
        return [(topic, payload, qos) for topic, (payload, qos) in sorted(messages.items())
                if matches(topic_filter, topic)]

    def vhost_deleted(self, vhost: str) -> None:
        if self.vhosts.pop(vhost, None) is not None:
            self._changed(vhost)

    # ------------------------------------------------------------ files
    def _changed(self, vhost: str) -> None:
        self._dirty.add(vhost)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.sync_interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dirty, self._dirty = self._dirty, set()
        for vhost in dirty:
            path = self._path(vhost)
            messages = self.vhosts.get(vhost)
            try:
                if not messages:
                    if os.path.exists(path):
                        os.unlink(path)
                    continue
                os.makedirs(self.directory, exist_ok=True)
                with open(path + ".tmp", "w") as f:
                    json.dump({"vhost": vhost, "messages": {
                        topic: [base64.b64encode(payload).decode(), qos]
                        for topic, (payload, qos) in messages.items()}}, f)
                os.replace(path + ".tmp", path)
            except OSError as exc:
                log.error("MQTT retained messages of vhost '%s' not saved: %s", vhost, exc)

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

An MQTT 5 client's retained message keeps its properties (given again to subscribers) and
its Message Expiry Interval: it is gone when that runs out, and a subscriber is given what
is left of it (RabbitMQ 3.13's retainer).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time

log = logging.getLogger("amqpbroker.mqtt")

# an MQTT 5 message's own properties (not its topic alias or subscription identifiers)
MESSAGE_PROPERTIES = {"payload_format_indicator", "message_expiry_interval", "content_type",
                      "response_topic", "correlation_data", "user_property"}


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
        # vhost -> topic -> (payload, qos, MQTT 5 properties, expires at: epoch s or None)
        self.vhosts: dict[str, dict[str, tuple]] = {}
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
                    topic: (base64.b64decode(entry[0]), entry[1],
                            _props_in(entry[2]) if len(entry) > 2 else {},
                            entry[3] if len(entry) > 3 else None)
                    for topic, entry in saved["messages"].items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("MQTT retained messages in %s not read: %s", name, exc)

    # ------------------------------------------------------------ use
    def retain(self, vhost: str, topic: str, payload: bytes, qos: int,
               properties: dict | None = None) -> None:
        messages = self.vhosts.setdefault(vhost, {})
        if payload:
            props = {k: v for k, v in (properties or {}).items() if k in MESSAGE_PROPERTIES}
            expiry = props.pop("message_expiry_interval", None)
            messages[topic] = (bytes(payload), qos, props,
                               time.time() + expiry if expiry is not None else None)
        elif messages.pop(topic, None) is None:
            return
        self._changed(vhost)

    def matching(self, vhost: str, topic_filter: str) -> list[tuple[str, bytes, int, dict]]:
        """(topic, payload, qos, properties) of each retained message ``topic_filter``
        matches; the properties with the message expiry that is left, if it has one."""
        messages = self.vhosts.get(vhost, {})
        if "+" not in topic_filter and "#" not in topic_filter:
            found = [topic_filter] if topic_filter in messages else []
        else:
            found = [topic for topic in sorted(messages) if matches(topic_filter, topic)]
        now, out = time.time(), []
        for topic in found:
            payload, qos, props, expires = messages[topic]
            if expires is not None:
                if expires <= now:
                    del messages[topic]         # run out
                    self._changed(vhost)
                    continue
                props = dict(props, message_expiry_interval=int(expires - now + 0.999))
            out.append((topic, payload, qos, props))
        return out

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
                        topic: [base64.b64encode(payload).decode(), qos, _props_out(props),
                                expires]
                        for topic, (payload, qos, props, expires) in messages.items()}}, f)
                os.replace(path + ".tmp", path)
            except OSError as exc:
                log.error("MQTT retained messages of vhost '%s' not saved: %s", vhost, exc)


def _props_out(props: dict) -> dict:
    """MQTT 5 properties as JSON: correlation data (bytes) in base64."""
    if "correlation_data" not in props:
        return props
    return dict(props, correlation_data=base64.b64encode(props["correlation_data"]).decode())


def _props_in(saved: dict) -> dict:
    props = dict(saved)
    if "correlation_data" in props:
        props["correlation_data"] = base64.b64decode(props["correlation_data"])
    if "user_property" in props:
        props["user_property"] = [tuple(pair) for pair in props["user_property"]]
    return props

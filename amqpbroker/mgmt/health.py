"""Health checks, as RabbitMQ's (``rabbit_mgmt_wm_health_check_*``, ``aliveness_test``):
200 ``{"status": "ok"}`` when healthy, 503 ``{"status": "failed", "reason": ...}`` with the
details RabbitMQ gives when not. One node: the node's alarms are the cluster's.

* ``alarms`` / ``local-alarms``: the memory and disk alarms in effect (and ours, by name);
* ``port-listener/{port}``: whether this node listens on ``port`` (AMQP, AMQPS, HTTP);
* ``protocol-listener/{protocol}``: whether it listens for ``protocol`` (``amqp``,
  ``amqp/ssl``, ``http``, ``https``; RabbitMQ's aliases: ``amqp091``, ``amqps``, ...);
* ``certificate-expiration/{within}/{unit}``: whether a certificate of a TLS listener
  (``--tls-cert``, ``--tls-ca``: every certificate in them) expires within that time
  (``days``, ``weeks``, ``months`` of 365/12 days, ``years``);
* ``node-is-quorum-critical``: whether stopping this node would leave a replicated queue
  (quorum queue, stream, replicated topic) with fewer in-sync replicas than its
  ``x-min-insync-replicas``, so refusing publishes: RabbitMQ's check before a rolling
  restart (``ok`` "single node cluster" without a cluster);
* ``node-is-mirror-sync-critical``: classic mirrored queues, which this broker has not (as
  RabbitMQ 4): ``ok``; ``/api/healthchecks/node[/{node}]``, RabbitMQ's older node check;
* ``virtual-hosts``: every vhost is running (a vhost here has no process of its own that
  could be down, so this is ``ok`` while the API answers);
* ``aliveness-test/{vhost}``: declares the queue ``aliveness-test`` in the vhost (as
  RabbitMQ does, and leaves it), publishes a message to it and gets it back.
"""
from __future__ import annotations

import os
import re
import ssl
import tempfile
import time

from aiohttp import web
from pamqp import commands

from .. import errors
from ..protocol import properties as props_mod
from ..storage.record import Record, now_ms
from . import access
from .api import ApiError, Route, json_response, not_found
from .overview import node_name

ALIVENESS_QUEUE = "aliveness-test"
ALIVENESS_BODY = b"test_message"


def _failed(reason: str, **details) -> web.Response:
    return json_response({"status": "failed", "reason": reason, **details}, 503)


def _alarms(broker) -> list[dict]:
    out = []
    for name in sorted(broker.alarms.active):
        resource = "disk" if name.startswith("disk") else name
        out.append({"node": node_name(broker), "resource": resource})
    return out


async def alarms(call):
    found = _alarms(call.broker)
    if found:
        return _failed("There are alarms in effect in the cluster", alarms=found)
    return {"status": "ok"}


async def local_alarms(call):
    found = _alarms(call.broker)
    if found:
        return _failed("There are alarms in effect on the node", alarms=found)
    return {"status": "ok"}


async def port_listener(call):
    try:
        port = int(call.params["port"])
    except ValueError:
        raise ApiError(400, "Invalid port") from None
    ports = [entry["port"] for entry in call.broker.listeners]
    if port in ports:
        return {"status": "ok", "port": port}
    return _failed("No active listener", missing=port, ports=ports)


# RabbitMQ's names for a protocol (rabbit_mgmt_wm_health_check_protocol_listener), of those
# this broker listens for; any other name is looked up as it is
PROTOCOL_ALIASES = {"amqp091": "amqp", "amqp0.9.1": "amqp", "amqp0-9-1": "amqp",
                    "amqp0_9_1": "amqp", "amqps": "amqp/ssl", "http1": "http",
                    "http1.1": "http", "http_api": "http", "management": "http",
                    "management_ui": "http", "ui": "http",
                    **{name: "mqtt" for name in ("mqtt3.1", "mqtt3.1.1", "mqtt31", "mqtt311",
                                                 "mqtt3_1", "mqtt3_1_1")},
                    **{name: "mqtt/ssl" for name in ("mqtts", "mqtt+tls", "mqtt+ssl")},
                    **{name: "http/web-mqtt" for name in ("webmqtt", "web-mqtt", "web_mqtt")},
                    **{name: "stomp" for name in ("stomp1.0", "stomp1.1", "stomp1.2", "stomp10",
                                                  "stomp11", "stomp12", "stomp1_0", "stomp1_1",
                                                  "stomp1_2")},
                    **{name: "stomp/ssl" for name in ("stomps", "stomp+tls", "stomp+ssl")},
                    **{name: "http/web-stomp" for name in ("webstomp", "web-stomp",
                                                           "web_stomp")}}


async def protocol_listener(call):
    wanted = call.params["protocol"].lower()
    wanted = PROTOCOL_ALIASES.get(wanted, wanted)
    protocols = [entry["protocol"] for entry in call.broker.listeners]
    if wanted in protocols:
        return {"status": "ok", "protocol": wanted}
    return _failed("No active listener", missing=wanted, protocols=protocols)


DAY = 86400
UNITS = {"days": DAY, "weeks": 7 * DAY, "months": DAY * 365 / 12, "years": 365 * DAY}
PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                             re.S)


def certificates_expire_on(path: str) -> list[float]:
    """The notAfter (epoch seconds) of every certificate in a PEM file."""
    with open(path, "rb") as f:
        blocks = PEM_CERTIFICATE.findall(f.read())
    out = []
    for block in blocks:
        # the ssl module decodes a certificate from a file only
        with tempfile.NamedTemporaryFile(suffix=".pem") as one:
            one.write(block)
            one.flush()
            decoded = ssl._ssl._test_decode_cert(one.name)
        out.append(ssl.cert_time_to_seconds(decoded["notAfter"]))
    return out


def _expiry_text(seconds: float) -> str:
    t = time.gmtime(seconds)
    return (f"{t.tm_year}-{t.tm_mon:02d}-{t.tm_mday:02d} "
            f"{t.tm_hour}:{t.tm_min:02d}:{t.tm_sec:02d}")


async def certificate_expiration(call):
    try:
        within = int(call.params["within"])
    except ValueError:
        raise ApiError(400, "Invalid expiration value.") from None
    unit = UNITS.get(call.params["unit"].lower())
    if unit is None:
        raise ApiError(400, "Time unit not recognised. Supported units: days, weeks, months, "
                            "years.")
    deadline = time.time() + within * unit
    cfg = call.broker.config
    files = {"certfile": cfg.tls_cert, "cacertfile": cfg.tls_ca}
    expiring = {}
    for kind, path in files.items():
        if path:
            try:
                soon = [s for s in certificates_expire_on(path) if s < deadline]
            except (OSError, ssl.SSLError, KeyError, ValueError) as exc:
                expiring[kind] = {"error": f"{path}: {exc}"}
                continue
            if soon:
                expiring[kind] = [_expiry_text(s) for s in soon]
    if not expiring:
        return {"status": "ok"}
    node = node_name(call.broker)
    found = [{"node": node, "protocol": entry["protocol"], "interface": entry["ip_address"],
              "port": entry["port"], "certfile": os.path.abspath(cfg.tls_cert or ""),
              "cacertfile": os.path.abspath(cfg.tls_ca) if cfg.tls_ca else "",
              "certfile_expires_on": expiring.get("certfile", []),
              "cacertfile_expires_on": expiring.get("cacertfile", [])}
             for entry in call.broker.listeners if entry["protocol"] in ("amqp/ssl", "https")]
    return _failed("Certificates expiring", expired=found)


def quorum_critical(broker) -> list[dict]:
    """The replicated queues that stopping this node would take below their minimum of
    in-sync replicas (``x-min-insync-replicas``): it is one of the ISR, and the others are
    fewer than the minimum."""
    cluster = broker.cluster
    out = []
    for vh in broker.vhosts.values():
        for q in vh.queues.values():
            p = cluster.placement.of_queue(vh.name, q.name) if cluster.placement else None
            if p is None or cluster.name not in p["isr"]:
                continue
            if len(p["isr"]) - 1 < int(p.get("min_isr", 1)):
                out.append({"name": q.name, "virtual_host": vh.name,
                            "type": q.arguments.get("x-queue-type", "quorum"),
                            "readable_name": f"queue '{q.name}' in vhost '{vh.name}'"})
    return out


async def node_is_quorum_critical(call):
    if getattr(call.broker, "cluster", None) is None:
        return {"status": "ok", "reason": "single node cluster"}
    critical = quorum_critical(call.broker)
    if critical:
        return _failed("There are quorum queues that would lose their quorum if the target "
                       "node is shut down", queues=critical)
    return {"status": "ok"}


async def node_is_mirror_sync_critical(call):
    if getattr(call.broker, "cluster", None) is None:
        return {"status": "ok", "reason": "single node cluster"}
    return {"status": "ok"}


async def node_check(call):
    """RabbitMQ's deprecated ``/api/healthchecks/node[/{node}]``: this node answers."""
    if call.params.get("node", node_name(call.broker)) != node_name(call.broker):
        raise not_found()
    return {"status": "ok"}


async def virtual_hosts(call):
    return {"status": "ok"}


async def aliveness_test(call):
    b = call.broker
    vh = b.vhosts.get(call.params["vhost"])
    if vh is None:
        raise not_found()
    try:
        await b.metadata.declare_queue(vhost=vh.name, name=ALIVENESS_QUEUE, owner=None,
                                       passive=ALIVENESS_QUEUE in vh.queues, durable=False,
                                       exclusive=False, auto_delete=False, arguments={})
        q = vh.queues[ALIVENESS_QUEUE]
        await q.purge()
        raw = props_mod.encode(commands.Basic.Properties())
        q.publish(Record(now_ms(), "", ALIVENESS_QUEUE, raw, ALIVENESS_BODY, 0), 0, False)
        got = await q.get(True)
    except (errors.AMQPError, KeyError) as err:
        return _failed(getattr(err, "reply_text", str(err)))
    if got is None or bytes(got[1].body) != ALIVENESS_BODY:
        return _failed("aliveness-test queue returned no message or another one")
    return {"status": "ok"}


ROUTES = [
    Route("GET", "/api/health/checks/alarms", alarms, access.MANAGEMENT),
    Route("GET", "/api/health/checks/local-alarms", local_alarms, access.MANAGEMENT),
    Route("GET", "/api/health/checks/port-listener/{port}", port_listener, access.MANAGEMENT),
    Route("GET", "/api/health/checks/virtual-hosts", virtual_hosts, access.MANAGEMENT),
    Route("GET", "/api/health/checks/protocol-listener/{protocol}", protocol_listener,
          access.MANAGEMENT),
    Route("GET", "/api/health/checks/certificate-expiration/{within}/{unit}",
          certificate_expiration, access.MANAGEMENT),
    Route("GET", "/api/health/checks/node-is-quorum-critical", node_is_quorum_critical,
          access.MANAGEMENT),
    Route("GET", "/api/health/checks/node-is-mirror-sync-critical",
          node_is_mirror_sync_critical, access.MANAGEMENT),
    Route("GET", "/api/healthchecks/node", node_check, access.MANAGEMENT),
    Route("GET", "/api/healthchecks/node/{node}", node_check, access.MANAGEMENT),
    Route("GET", "/api/aliveness-test/{vhost}", aliveness_test, access.VHOST),
]

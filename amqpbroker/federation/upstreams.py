"""Federation upstreams: the values of runtime parameters ``federation-upstream`` and
``federation-upstream-set``, checked as RabbitMQ 3.10's ``rabbit_federation_parameters``
checks them (``parameter_validation.py``; the URIs as ``amqp_uri`` reads them,
``shovel/definition.py``), and
``for_policy``: the upstreams a policy gives an exchange or a queue, with RabbitMQ's
defaults (``rabbit_federation_upstream``). A set's entry may override any key of the
upstream it names, its ``uri`` included (RabbitMQ's ``bget`` reads the entry first). A URI
without a vhost names the downstream's own (``amqp_uri:parse`` with its vhost as default).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from .. import pcre
from ..erlang import erlang_term
from ..parameter_validation import Invalid, binary, boolean, enum, number, proplist
from ..shovel.definition import ACK_MODES, Uri, parse_uri, uri_list

UPSTREAM = "federation-upstream"
UPSTREAM_SET = "federation-upstream-set"
COMPONENTS = (UPSTREAM, UPSTREAM_SET)
POLICY_KEYS = ("federation-upstream", "federation-upstream-set",
               "federation-upstream-pattern")
DEFAULT_PREFETCH = 1000

# RabbitMQ's shared_validation, in its order (errors of later keys are reported first)
_SHARED = [("exchange", binary), ("queue", binary), ("consumer-tag", binary),
           ("prefetch-count", number), ("reconnect-delay", number), ("max-hops", number),
           ("expires", number), ("message-ttl", number), ("trust-user-id", boolean),
           ("ack-mode", enum(ACK_MODES)),
           ("resource-cleanup-mode", enum(("default", "never"))),
           ("ha-policy", binary), ("bind-nowait", boolean),
           ("channel-use-mode", enum(("multiple", "single")))]


@dataclass(frozen=True)
class Upstream:
    """One upstream of a federated exchange or queue, with RabbitMQ's defaults."""
    name: str
    uris: tuple                 # of Uri
    exchange: str               # the upstream exchange (default: the downstream's name)
    queue: str                  # the upstream queue (likewise)
    consumer_tag: str
    prefetch_count: int
    reconnect_delay: float
    max_hops: int
    expires: int | None
    message_ttl: int | None
    trust_user_id: bool
    ack_mode: str
    resource_cleanup_mode: str


def check(component: str, name: str, value) -> None:
    """``Invalid`` with RabbitMQ's reasons unless ``value`` is a valid parameter."""
    if component == UPSTREAM:
        reasons = proplist(name, value, [("uri", uri_list(None)), *_SHARED], ("uri",))
    else:
        if not isinstance(value, list):
            raise Invalid([f"{name} should be list, actually was {erlang_term(value)}"])
        reasons = [r for entry in value
                   for r in proplist(name, entry, [("upstream", binary), *_SHARED],
                                     ("upstream",))]
    if reasons:
        raise Invalid(reasons)


def policy_problem(definition: dict) -> str | None:
    """RabbitMQ's ``validate_policy`` of the federation keys of a policy's definition."""
    keys = [k for k in POLICY_KEYS if k in definition]
    if len(keys) >= 2:
        return ("cannot specify federation-upstream, federation-upstream-set or "
                "federation-upstream-pattern together")
    for key in keys:
        value = definition[key]
        what = {"federation-upstream": "federation upstream name",
                "federation-upstream-set": "federation upstream set name",
                "federation-upstream-pattern": "federation upstream pattern name"}[key]
        if not isinstance(value, str):
            return f"{erlang_term(value)} is not a valid {what}"
        if key == "federation-upstream-pattern":
            try:
                pcre.compile(value)
            except re.error as exc:         # as RabbitMQ's re:compile refusal, {Why, At}
                return f"could not compile pattern {value} to a regular expression. " \
                       f'Error: {{"{exc.msg}",{exc.pos}}}'
    return None


def for_policy(definition: dict | None, upstreams: dict, sets: dict, own_name: str,
               own_vhost: str) -> list[Upstream]:
    """The upstreams of an exchange or queue named ``own_name`` in ``own_vhost`` whose
    policy has ``definition``, from that vhost's ``upstreams`` ({name: value}) and
    ``sets``."""
    if not definition:
        return []
    if "federation-upstream" in definition:
        entries = [{"upstream": definition["federation-upstream"]}]
    elif "federation-upstream-set" in definition:
        set_name = definition["federation-upstream-set"]
        entries = [{"upstream": n} for n in sorted(upstreams)] if set_name == "all" \
            else sets.get(set_name, [])
    elif "federation-upstream-pattern" in definition:
        regex = pcre.compile(definition["federation-upstream-pattern"])
        entries = [{"upstream": n} for n in sorted(upstreams) if regex.search(n)]
    else:
        return []
    out = []
    for entry in entries:
        value = upstreams.get(entry.get("upstream"))
        if value is not None:
            out.append(_upstream(entry["upstream"], entry, value, own_name, own_vhost))
    return out


def _uri(text: str, own_vhost: str) -> Uri:
    uri = parse_uri(text)
    return uri if urlsplit(text).path else replace(uri, vhost=own_vhost)


def _upstream(name: str, entry: dict, value: dict, own_name: str, own_vhost: str) -> Upstream:
    def get(key, default=None):
        return entry.get(key, value.get(key, default))
    raw = get("uri")
    return Upstream(
        name=name,
        uris=tuple(_uri(u, own_vhost) for u in ([raw] if isinstance(raw, str) else raw)),
        exchange=get("exchange", own_name), queue=get("queue", own_name),
        consumer_tag=get("consumer-tag", f"federation-link-{name}"),
        prefetch_count=int(get("prefetch-count", DEFAULT_PREFETCH)),
        reconnect_delay=get("reconnect-delay", 5), max_hops=int(get("max-hops", 1)),
        expires=get("expires"), message_ttl=get("message-ttl"),
        trust_user_id=get("trust-user-id", False), ack_mode=get("ack-mode", "on-confirm"),
        resource_cleanup_mode=get("resource-cleanup-mode", "default"))


__all__ = ["Invalid", "Upstream", "Uri", "check", "for_policy", "policy_problem"]

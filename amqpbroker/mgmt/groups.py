"""``/api/consumer-groups``: consumer groups, their members, committed offsets and lag (ours;
the shape the dashboard's groups page reads, ``dashboard/static/js/pages/groups.js``).

* ``GET /api/consumer-groups[/{vhost}]``: every group of the vhosts the user sees, with its
  members and lag. A group with no member stays listed (``"state": "empty"``) with its
  committed offsets and lag, for as long as its offsets are kept (they live beside the
  partitions: deleting the topic or stream deletes them).
* ``GET /api/consumer-groups/{vhost}/{group}``: one group::

      {"vhost", "name", "topics": [...], "state": "stable" | "rebalancing" | "empty",
       "members": [{"member_id", "connection", "instance_id",
                    "assignment": [{"topic", "partition"}]}],
       "lag": N,
       "partitions": [{"topic", "partition", "member", "committed_offset",
                       "log_end_offset", "lag"}]}

  ``committed_offset`` is Kafka's: the next offset the group reads; ``lag`` is
  ``log_end_offset - committed_offset``.
* ``POST /api/consumer-groups/{vhost}/{group}/reset-offsets`` with ``{"topic": T, "to":
  "earliest" | "latest" | {"offset": n} | {"timestamp": ms}}``: the group's committed offset
  on every partition of topic (or stream) ``T``, as ``kafka-consumer-groups --reset-offsets``;
  an offset is clamped to the log, a timestamp is the first message stored at or after it.
  Refused with 409 while the group has members on ``T`` (connected, or static members within
  their session timeout), as Kafka refuses it for an active group. Answers the new offsets.

Who may: as the queue endpoints, a management user who may use the vhost; a reset also needs
read permission on every partition (what consuming them needs), else 401 "Access refused.".
"""
from __future__ import annotations

from .. import errors
from ..supervisor.groups import GroupBusy
from . import access
from .api import ApiError, Route, bad_request, json_response, not_found
from .validation import Field, Invalid, Obj


def _to(value, where: str):
    if value in ("earliest", "latest"):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (key, n), = value.items()
        if key in ("offset", "timestamp") and isinstance(n, int) and not isinstance(n, bool) \
                and n >= 0:
            return {key: n}
    raise Invalid('"to" must be "earliest", "latest", {"offset": n} or {"timestamp": ms} '
                  '(n, ms: integers >= 0)')


def _topic(value, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid('"topic" must be the name of a topic or a stream')
    return value


RESET = Obj(topic=Field(_topic), to=Field(_to))


async def list_groups(call):
    return await call.broker.groups.describe(access.listed_vhosts(call))


async def get_group(call):
    vhost = call.params["vhost"]
    if vhost not in call.broker.vhosts:
        raise not_found()
    found = await call.broker.groups.describe([vhost], only=call.params["group"])
    if not found:
        raise not_found()
    return found[0]


async def reset_offsets(call):
    b = call.broker
    vhost, group = call.params["vhost"], call.params["group"]
    topic = call.body["topic"]
    if vhost not in b.vhosts:
        raise not_found()
    refs = b.groups.partitions(vhost, topic)
    if not refs:
        raise ApiError(404, f"no topic or stream '{topic}' in vhost '{vhost}'",
                       "Object Not Found")
    if any(not r.is_stream for r in refs):
        raise bad_request(f"'{topic}' in vhost '{vhost}' has no stream partitions: consumer "
                          f"groups have no offsets there")
    try:
        for r in refs:
            b.users.check(call.user, vhost, "read", "queue", r.name)
    except errors.AMQPError as exc:
        raise access.refused(call.user.name, "Access refused.") from exc
    try:
        partitions = await b.groups.reset(vhost, group, topic, call.body["to"])
    except GroupBusy as exc:
        raise ApiError(409, str(exc), "conflict") from None
    except errors.AMQPError as exc:
        if exc.reply_code == 406:       # a member joined meanwhile: its worker refused
            raise ApiError(409, exc.text, "conflict") from None
        raise bad_request(exc.text) from None
    return json_response({"vhost": vhost, "name": group, "topic": topic,
                          "partitions": partitions})


ROUTES = [
    Route("GET", "/api/consumer-groups", list_groups, access.MANAGEMENT),
    Route("GET", "/api/consumer-groups/{vhost}", list_groups, access.VHOST),
    Route("GET", "/api/consumer-groups/{vhost}/{group}", get_group, access.VHOST),
    Route("POST", "/api/consumer-groups/{vhost}/{group}/reset-offsets", reset_offsets,
          access.VHOST, body=RESET),
]

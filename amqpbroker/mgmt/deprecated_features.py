"""``/api/deprecated-features`` and ``.../used``: RabbitMQ 3.13's deprecated features (what
RabbitMQ 4 removes), for the tools that check a broker before an upgrade. The list is
3.13's; ``used`` names those this broker's definitions use now: classic queue mirroring (a
policy or operator policy with an ``ha-*`` key, taken here without effect) and transient
non-exclusive queues (a non-durable queue without an exclusive owner), which RabbitMQ 4 looks
for too; global QoS, RAM nodes and the metrics collection switch are never reported used
(RabbitMQ 3.13 cannot tell either).

Who may: any management user (RabbitMQ's ``is_authorized``).
"""
from __future__ import annotations

from . import access
from .api import Route

BLOG = "https://blog.rabbitmq.com/posts/2021/08/4.0-deprecation-announcements/"
# (name, doc_url fragment, provided_by): RabbitMQ 3.13.7's -rabbit_deprecated_feature list
FEATURES = (
    ("classic_queue_mirroring", "#removal-of-classic-queue-mirroring", "rabbit"),
    ("global_qos", "#removal-of-global-qos", "rabbit"),
    ("management_metrics_collection",
     "#disable-metrics-delivery-via-the-management-api--ui", "rabbitmq_management_agent"),
    ("ram_node_type", "#removal-of-ram-nodes", "rabbit"),
    ("transient_nonexcl_queues", "#removal-of-transient-non-exclusive-queues", "rabbit"),
)


def _item(name: str, fragment: str, provided_by: str) -> dict:
    return {"name": name, "desc": "", "deprecation_phase": "permitted_by_default",
            "doc_url": BLOG + fragment, "provided_by": provided_by}


def used(broker) -> set[str]:
    out = set()
    for vh in broker.vhosts.values():
        if any(key.startswith("ha-") for p in (*vh.policies.values(),
                                               *vh.operator_policies.values())
               for key in p.definition):
            out.add("classic_queue_mirroring")
        if any(not q.durable and q.exclusive_owner is None for q in vh.queues.values()):
            out.add("transient_nonexcl_queues")
    return out


async def list_deprecated(call):
    return [_item(*f) for f in FEATURES]


async def list_used(call):
    now = used(call.broker)
    return [_item(*f) for f in FEATURES if f[0] in now]


ROUTES = [
    Route("GET", "/api/deprecated-features", list_deprecated, access.MANAGEMENT,
          sort=("name",)),
    Route("GET", "/api/deprecated-features/used", list_used, access.MANAGEMENT,
          sort=("name",)),
]

"""``/api/feature-flags``: RabbitMQ's feature flags, for the tools that read them before
they rely on a feature (or an upgrade). This broker announces RabbitMQ 3.13 (``/api/overview``):
it lists 3.13's core and management flags whose features it has, every one enabled —
there is no mixed-version cluster here to wait for. Left out: what it has not (Khepri's
``khepri_db``, the MQTT plugin's internal ones about its Ra cluster and QoS 0 queue type);
``mqtt_v5`` is listed, as the broker speaks MQTT 5.

Who may (RabbitMQ's rules, measured on 3.10.8): administrators; enabling an enabled flag is
204, an unknown one 400 "unsupported".
"""
from __future__ import annotations

from . import access
from .api import Route, bad_request, no_content

QUEUES = "https://www.rabbitmq.com/quorum-queues.html"
STREAMS = "https://www.rabbitmq.com/stream.html"
# (name, desc, doc_url, stability, provided_by): RabbitMQ 3.13.7's rabbit_core_ff,
# rabbit_mgmt_ff, rabbit_mgmt_app, rabbit_mqtt_ff
FLAGS = (
    ("classic_mirrored_queue_version", "Support setting version for classic mirrored queues",
     "", "required", "rabbit"),
    ("classic_queue_type_delivery_support",
     "Bug fix for classic queue deliveries using mixed versions",
     "https://github.com/rabbitmq/rabbitmq-server/issues/5931", "required", "rabbit"),
    ("detailed_queues_endpoint", "Add a detailed queues HTTP API endpoint. Reduce number of "
     "metrics in the default endpoint.", "", "stable", "rabbitmq_management"),
    ("direct_exchange_routing_v2", "v2 direct exchange routing implementation", "",
     "required", "rabbit"),
    ("drop_unroutable_metric", "Count unroutable publishes to be dropped in stats", "",
     "required", "rabbitmq_management_agent"),
    ("empty_basic_get_metric", "Count AMQP `basic.get` on empty queues in stats", "",
     "required", "rabbitmq_management_agent"),
    ("feature_flags_v2", "Feature flags subsystem V2", "", "required", "rabbit"),
    ("implicit_default_bindings",
     "Default bindings are now implicit, instead of being stored in the database", "",
     "required", "rabbit"),
    ("listener_records_in_ets", "Store listener records in ETS instead of Mnesia", "",
     "required", "rabbit"),
    ("maintenance_mode_status", "Maintenance mode status", "", "required", "rabbit"),
    ("message_containers", "Message containers.", "", "stable", "rabbit"),
    ("message_containers_deaths_v2", "Bug fix for dead letter cycle detection",
     "https://github.com/rabbitmq/rabbitmq-server/issues/11159", "stable", "rabbit"),
    ("mqtt_v5", "Support MQTT 5.0", "", "stable", "rabbitmq_mqtt"),       # rabbit_mqtt_ff
    ("quorum_queue", "Support queues of type `quorum`", QUEUES, "required", "rabbit"),
    ("quorum_queue_non_voters",
     "Allows new quorum queue members to be added as non voters initially.", "", "stable",
     "rabbit"),
    ("restart_streams", "Support for restarting streams with optional preferred next leader "
     "argument.Used to implement stream leader rebalancing", "", "stable", "rabbit"),
    ("stream_filtering", "Support for stream filtering.", "", "stable", "rabbit"),
    ("stream_queue", "Support queues of type `stream`", STREAMS, "required", "rabbit"),
    ("stream_sac_coordinator_unblock_group",
     "Bug fix to unblock a group of consumers in a super stream partition",
     "https://github.com/rabbitmq/rabbitmq-server/issues/7743", "stable", "rabbit"),
    ("stream_single_active_consumer", "Single active consumer for streams", STREAMS,
     "required", "rabbit"),
    ("stream_update_config_command",
     "A new internal command that is used to update streams as part of a policy.", "",
     "stable", "rabbit"),
    ("tracking_records_in_ets", "Store tracking records in ETS instead of Mnesia", "",
     "required", "rabbit"),
    ("user_limits", "Configure connection and channel limits for a user", "", "required",
     "rabbit"),
    ("virtual_host_metadata", "Virtual host metadata (description, tags, etc)", "",
     "required", "rabbit"),
)
NAMES = frozenset(f[0] for f in FLAGS)


async def list_feature_flags(call):
    return [{"name": name, "desc": desc, "doc_url": doc_url, "state": "enabled",
             "stability": stability, "provided_by": provided_by}
            for name, desc, doc_url, stability, provided_by in FLAGS]


async def enable_feature_flag(call):
    if call.params["name"] not in NAMES:
        raise bad_request("unsupported")
    return no_content()             # enabled already


ROUTES = [
    Route("GET", "/api/feature-flags", list_feature_flags, access.ADMINISTRATOR,
          sort=("name",)),
    Route("PUT", "/api/feature-flags/{name}/enable", enable_feature_flag,
          access.ADMINISTRATOR),
]

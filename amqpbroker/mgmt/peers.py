"""Asking another node of the cluster: its management API, with the caller's credentials
(as RabbitMQ's API asks the node that runs a shovel or leads a queue). Used where that node
alone knows the answer: the controller's shovels and federation links, a quorum queue's
leader's followers."""
from __future__ import annotations

import aiohttp

from .api import ApiError

PEER_TIMEOUT = 5.0          # seconds to wait for the other node's answer


async def ask_node(call, node: str, method: str, path: str):
    """The JSON body of ``method path`` on node ``node``'s management API (``node``: its
    cluster name, ``n1``; None for a 204); its refusal is this call's, and 503 when it has
    none or does not answer."""
    peer = next((n for n in call.broker.cluster.nodes() if n["node_name"] == node), None)
    if peer is None or not peer.get("management_port"):
        raise ApiError(503, f"node {node} has no management API to ask", "unavailable")
    url = f"http://{peer['host']}:{peer['management_port']}{path}"
    headers = {"Authorization": call.headers.get("Authorization", "")}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, headers=headers, timeout=aiohttp.
                                       ClientTimeout(total=PEER_TIMEOUT)) as r:
                status = r.status
                body = await r.json(content_type=None) if status != 204 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ApiError(503, f"node {node} did not answer: {exc or type(exc).__name__}",
                       "unavailable") from None
    if status >= 400:
        body = body if isinstance(body, dict) else {}
        raise ApiError(status, body.get("reason", ""), body.get("error", "error"))
    return body


def controller_node(call, what: str) -> str | None:
    """The node that runs the shovels and federation links (``what``, for the 503): None
    when it is this one (a single node, or the cluster's controller)."""
    b = call.broker
    if b.shovels.runs_here():
        return None
    leader = b.cluster.controller.leader()
    if leader is None:
        raise ApiError(503, f"no controller to ask for the {what}", "unavailable")
    return leader

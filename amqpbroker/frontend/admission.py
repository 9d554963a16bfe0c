"""A session's side of RabbitMQ's connection and channel limits: tell the supervisor.

The node's counts live in the supervisor (``supervisor/tally.py``, which also says what the
limits are). A session reports its connection when it opens (at ``connection.open``, before
``open-ok``), each channel at ``channel.open`` (before ``open-ok``), each channel it closes,
and the connection when it ends. An open is a request, answered before the session goes on
(530 NOT_ALLOWED over a limit), only when this process's copy of the metadata shows a limit
that applies to it; otherwise it is a notice (``req`` 0) that costs no round trip. The
management API answers a limit change only once every front-end's copy has it
(``MetadataOwner.sync_frontends``), so a limit it accepted is checked from then on.

``link`` has the control channel's two calls, ``request(cls, **fields)`` and
``notify(msg)``: the control channel itself in a front-end process, ``tally.LocalCounts``
in the supervisor.
"""
from __future__ import annotations

from .. import contract as c


def limit_of(limits: dict, name: str) -> int | None:
    """The limit ``name`` in force, or None (absent or negative: no limit)."""
    value = limits.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


class Admission:
    def __init__(self, broker, link):
        self.broker = broker
        self.link = link
        self.reported: set[str] = set()       # connections whose open was sent

    def _user_limits(self, session) -> dict:
        if session.user.internal:
            return {}
        user = self.broker.users.users.get(session.user.name)      # its limits as of now
        return user.limits if user is not None else {}

    async def open_connection(self, session, vhost: str) -> None:
        """Count the connection in ``vhost``; 530 if a limit is reached."""
        vh = self.broker.vhosts.get(vhost)
        limited = (vh is not None and limit_of(vh.limits, "max-connections") is not None) \
            or limit_of(self._user_limits(session), "max-connections") is not None
        conn = session.reply_token
        self.reported.add(conn)
        if limited:
            await self.link.request(c.OpenConnection, conn=conn, vhost=vhost,
                                    user=session.user.name)
        else:
            self.link.notify(c.OpenConnection(req=0, conn=conn, vhost=vhost,
                                              user=session.user.name))

    async def open_channel(self, session) -> None:
        """Count one more channel of the session's user; 530 if its limit is reached."""
        if limit_of(self._user_limits(session), "max-channels") is not None:
            await self.link.request(c.OpenChannel, conn=session.reply_token)
        else:
            self.link.notify(c.OpenChannel(req=0, conn=session.reply_token))

    def channel_closed(self, session) -> None:
        self.link.notify(c.ChannelClosed(conn=session.reply_token))

    def connection_closed(self, session) -> None:
        """The connection ended (its channels with it); nothing if it was never counted."""
        if session.reply_token in self.reported:
            self.reported.discard(session.reply_token)
            self.link.notify(c.ConnectionClosed(conn=session.reply_token))

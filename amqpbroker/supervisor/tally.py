"""The node's counts of AMQP connections and channels, and RabbitMQ's limits on them.

Limits are per node, as in RabbitMQ: ``max-connections`` of a vhost and of a user,
``max-channels`` of a user (``max-queues`` is checked where queues are declared,
``frontend/vhost.py``). A limit below zero is no limit; 0 refuses every one.

Every process that serves AMQP reports each connection and channel that opens and closes
(``contract.COUNTS``; ``frontend/admission.py`` sends them): the supervisor's own sessions
through a function call (``LocalCounts``), front-end processes over their control channel.
A report that is a request (``req`` not 0) is checked before it is counted, atomically,
since the supervisor handles one message at a time; one with ``req`` 0 is only counted.
Counts are kept per connection (``conn``, its node-wide name), so a close that overtakes a
pending open, or a front-end that dies with its connections (``forget_prefix``), leaves
nothing counted behind.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .. import contract as c
from .. import errors
from ..frontend.admission import limit_of


@dataclass
class Counted:
    vhost: str
    user: str
    channels: int = 0


class Tally:
    def __init__(self, broker):
        self.broker = broker
        self.connections: dict[str, Counted] = {}
        self.per_vhost: Counter = Counter()        # open connections
        self.per_user: Counter = Counter()         # open connections
        self.channels_per_user: Counter = Counter()

    # one handler per message of ``contract.COUNTS``
    def on_open_connection(self, m: c.OpenConnection) -> None:
        if m.req:
            self._check_connection(m.vhost, m.user)
        self.on_connection_closed(m)                # a name is counted once
        self.connections[m.conn] = Counted(m.vhost, m.user)
        self.per_vhost[m.vhost] += 1
        self.per_user[m.user] += 1

    def on_open_channel(self, m: c.OpenChannel) -> None:
        counted = self.connections.get(m.conn)
        if counted is None:
            return                                  # its connection closed meanwhile
        if m.req:
            user = self.broker.users.users.get(counted.user)
            limit = limit_of(user.limits, "max-channels") if user is not None else None
            if limit is not None and self.channels_per_user[counted.user] >= limit:
                raise errors.NotAllowed(
                    f"number of channels opened for user '{counted.user}' has reached the "
                    f"maximum allowed user limit of ({limit})")
        counted.channels += 1
        self.channels_per_user[counted.user] += 1

    def on_channel_closed(self, m: c.ChannelClosed) -> None:
        counted = self.connections.get(m.conn)
        if counted is not None and counted.channels:
            counted.channels -= 1
            self._less(self.channels_per_user, counted.user)

    def on_connection_closed(self, m) -> None:
        counted = self.connections.pop(m.conn, None)
        if counted is not None:
            self._less(self.per_vhost, counted.vhost)
            self._less(self.per_user, counted.user)
            self._less(self.channels_per_user, counted.user, counted.channels)

    def forget_prefix(self, prefix: str) -> None:
        """A front-end process is gone, and with it every connection named ``prefix…``."""
        for conn in [k for k in self.connections if k.startswith(prefix)]:
            self.on_connection_closed(c.ConnectionClosed(conn=conn))

    # ------------------------------------------------------------ checks
    def _check_connection(self, vhost: str, user: str) -> None:
        """RabbitMQ's order (rabbit_reader, connection.open): the vhost's limit, then the
        user's; both 530 NOT_ALLOWED, worded as RabbitMQ 3.10 words them."""
        vh = self.broker.vhosts.get(vhost)
        limit = limit_of(vh.limits, "max-connections") if vh is not None else None
        if limit is not None and self.per_vhost[vhost] >= limit:
            raise errors.NotAllowed(f"access to vhost '{vhost}' refused for user '{user}': "
                                    f"connection limit ({limit}) is reached", 10, 40)
        u = self.broker.users.users.get(user)
        limit = limit_of(u.limits, "max-connections") if u is not None else None
        if limit is not None and self.per_user[user] >= limit:
            raise errors.NotAllowed(f"connection refused for user '{user}': user connection "
                                    f"limit ({limit}) is reached", 10, 40)

    @staticmethod
    def _less(counter: Counter, key: str, n: int = 1) -> None:
        counter[key] -= n
        if counter[key] <= 0:
            del counter[key]


class LocalCounts:
    """The control channel's two calls (``request``, ``notify``) for the sessions of the
    supervisor itself (``--frontends 0``): the tally handles them at once."""

    def __init__(self, tally: Tally):
        self.table = c.handlers(tally, c.COUNTS)

    async def request(self, cls, **fields):
        return self.table[cls](cls(req=1, **fields))

    def notify(self, msg) -> None:
        self.table[type(msg)](msg)

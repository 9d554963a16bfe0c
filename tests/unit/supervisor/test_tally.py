"""The supervisor's counts for RabbitMQ's limits, without processes: a close that overtakes
a pending open, a dead front-end's connections, opens counted with and without a check."""
from __future__ import annotations

import pytest

from amqpbroker import contract as c
from amqpbroker import errors
from amqpbroker.frontend.auth import Users
from amqpbroker.frontend.vhost import VirtualHost
from amqpbroker.supervisor.tally import Tally


class Node:
    """What the tally reads: vhosts with their limits, users with theirs."""

    def __init__(self):
        self.users = Users()
        self.users.add_user("ann", "pw")
        self.vhosts = {"/": VirtualHost(self, "/")}

    def changed(self, op):
        pass


@pytest.fixture
def node():
    return Node()


def open_conn(tally, conn, check=True, vhost="/", user="ann"):
    tally.on_open_connection(c.OpenConnection(req=int(check), conn=conn, vhost=vhost,
                                              user=user))


def test_a_vhost_limit_counts_every_process_and_frees_on_close(node):
    tally = Tally(node)
    node.vhosts["/"].limits = {"max-connections": 2}
    open_conn(tally, "0.a")
    open_conn(tally, "1.b")                 # another front-end
    with pytest.raises(errors.NotAllowed) as exc:
        open_conn(tally, "0.c")
    assert (exc.value.reply_code, exc.value.text) == (
        530, "access to vhost '/' refused for user 'ann': connection limit (2) is reached")
    tally.on_connection_closed(c.ConnectionClosed(conn="0.a"))
    open_conn(tally, "0.c")


def test_an_unchecked_open_is_counted_and_a_negative_limit_is_none(node):
    tally = Tally(node)
    node.users.users["ann"].limits = {"max-connections": 1}
    open_conn(tally, "0.a", check=False)    # the front-end's copy had no limit yet
    with pytest.raises(errors.NotAllowed) as exc:
        open_conn(tally, "0.b")
    assert exc.value.text == ("connection refused for user 'ann': user connection limit (1) "
                              "is reached")
    node.users.users["ann"].limits = {"max-connections": -1}
    open_conn(tally, "0.b")


def test_channels_go_with_their_connection_and_a_dead_frontend(node):
    tally = Tally(node)
    node.users.users["ann"].limits = {"max-channels": 2}
    open_conn(tally, "0.a")
    open_conn(tally, "1.b")
    tally.on_open_channel(c.OpenChannel(req=1, conn="0.a"))
    tally.on_open_channel(c.OpenChannel(req=0, conn="1.b"))
    with pytest.raises(errors.NotAllowed) as exc:
        tally.on_open_channel(c.OpenChannel(req=1, conn="1.b"))
    assert (exc.value.text, exc.value.class_id, exc.value.method_id) == (
        "number of channels opened for user 'ann' has reached the maximum allowed user "
        "limit of (2)", 0, 0)
    tally.forget_prefix("1.")               # front-end 1 died with connection b
    assert dict(tally.per_user) == {"ann": 1} and dict(tally.channels_per_user) == {"ann": 1}
    tally.on_open_channel(c.OpenChannel(req=1, conn="0.a"))
    tally.on_channel_closed(c.ChannelClosed(conn="0.a"))
    tally.on_connection_closed(c.ConnectionClosed(conn="0.a"))
    assert not (tally.per_vhost or tally.per_user or tally.channels_per_user)


def test_messages_of_a_connection_that_is_gone_change_nothing(node):
    """Its close overtook its channel open, or it was refused and closed."""
    tally = Tally(node)
    tally.on_connection_closed(c.ConnectionClosed(conn="0.x"))
    tally.on_open_channel(c.OpenChannel(req=1, conn="0.x"))
    tally.on_channel_closed(c.ChannelClosed(conn="0.x"))
    assert not (tally.connections or tally.per_user or tally.channels_per_user)

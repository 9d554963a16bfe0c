"""Fixtures shared by the integration tests: each module starts its own ``broker``."""
from __future__ import annotations

import pika
import pytest


@pytest.fixture
def ch(broker):
    """A pika channel in confirm mode on the module's ``broker``, closed afterwards."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    channel = conn.channel()
    channel.confirm_delivery()
    yield channel
    if conn.is_open:
        conn.close()

"""AMQP 1.0 on the AMQP port, as RabbitMQ serves it (its ``rabbitmq_amqp1_0`` plugin in 3.x,
the core in 4.0): a connection whose first bytes are an AMQP 1.0 header (``AMQP 0 1 0 0``,
or ``AMQP 3 1 0 0`` for SASL) is handed from the AMQP 0-9-1 session that accepted it
(``frontend/session.py``) to an ``Amqp10Connection``, in whichever process accepted it (a
front-end, or the one process), which reaches the queues through this process's own AMQP
listener."""
from __future__ import annotations

from ..adapter import AdapterServer
from .connection import Amqp10Connection


class Amqp10Server(AdapterServer):
    connection_class = Amqp10Connection

    def __init__(self, broker, address):
        super().__init__(broker)
        self._address = address         # () -> (host, port) of this process's AMQP listener

    def local_address(self) -> tuple[str, int]:
        return self._address()

    def take_over(self, transport, received: bytes) -> None:
        """The connection on ``transport`` is AMQP 1.0 from here, its first bytes
        ``received``."""
        connection = self.connection_class(self)
        transport.set_protocol(connection)
        connection.taken_over(transport, received)

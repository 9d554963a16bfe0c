"""What the tests do with qpid-proton's blocking AMQP 1.0 client beyond its own calls."""
from __future__ import annotations


def settle_modified(receiver, annotations: dict, undeliverable: bool = False) -> None:
    """Settle the oldest message ``receiver`` (proton's ``BlockingReceiver``) received
    ``modified`` (delivery-failed) with message annotations, as RabbitMQ's AMQP 1.0 clients'
    ``requeue(annotations)`` / ``discard(annotations)`` do (``undeliverable``: discard)."""
    from proton import Delivery
    delivery = receiver.fetcher.unsettled[0]
    delivery.local.annotations = annotations
    delivery.local.failed = True
    delivery.local.undeliverable = undeliverable
    receiver.settle(Delivery.MODIFIED)

"""Fixtures aiormq's ``tests/conftest.py`` uses but its sdist does not define, and a stand-in
for the memcached client dramatiq's ``tests/conftest.py`` imports.

aiormq 7.2.4's tests ask for ``rabbitmq_container`` and ``amqp_direct_url`` (aio-pika's
conftest defines both with Docker; aiormq's sdist ships without them). ``run.py`` loads this
module with ``-p suite_fixtures`` and says where the broker under test is in
``CLIENT_SUITES_AMQP_HOST`` / ``CLIENT_SUITES_AMQP_PORT``. A conftest's own fixture of the same
name wins over these, so aio-pika keeps its own (served by ``docker_stand_in.py``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import sys
import types

import pytest
from yarl import URL

try:
    import pylibmc  # noqa: F401
except ImportError:
    # dramatiq's conftest imports pylibmc (a C build against libmemcached) for its memcached
    # rate-limiter fixtures; its RabbitMQ tests, the only ones run here, never touch it.
    # A fixture that did would fail on the missing attribute, not pass.
    sys.modules["pylibmc"] = types.ModuleType("pylibmc")


@dataclass
class Container:
    id: str
    ports: dict
    host: str


@pytest.fixture(scope="session")
def rabbitmq_container() -> Container:
    port = int(os.environ["CLIENT_SUITES_AMQP_PORT"])
    # no TLS listener: 5671/tcp is the plain port, and the amqps tests are deselected
    return Container("broker-under-test", {"5672/tcp": port, "5671/tcp": port},
                     os.environ["CLIENT_SUITES_AMQP_HOST"])


@pytest.fixture(scope="session")
def amqp_direct_url(rabbitmq_container) -> URL:
    return URL.build(scheme="amqp", user="guest", password="guest", path="//",
                     host=rabbitmq_container.host, port=rabbitmq_container.ports["5672/tcp"])

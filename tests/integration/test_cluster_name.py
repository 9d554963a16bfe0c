"""A cluster name set through the management API is what every connection opened after the
answer is told (connection.start's ``cluster_name``), whichever front-end process accepts
it: the answer waits until each has it. Federation links read it there to know which broker
a message came from (a stale name let a message go round a two-broker cycle once, in CI's
split layout)."""
from __future__ import annotations

import pika
import pytest

from amqpbroker.testing import LAYOUTS, BrokerProcess

pytestmark = pytest.mark.own_layout         # every broker here names its layout


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_connections_after_the_answer_see_the_new_name(tmp_path, layout):
    with BrokerProcess(tmp_path, *LAYOUTS[layout], management=True) as b:
        for i in range(30):
            path, body = (("cluster-name", {"name": f"n{i}"}) if i % 2 else
                          ("global-parameters/cluster_name",
                           {"name": "cluster_name", "value": f"n{i}"}))
            assert b.request("PUT", path, body)[0] in (201, 204)
            conn = pika.BlockingConnection(pika.URLParameters(b.url))
            try:
                assert conn._impl.server_properties["cluster_name"] == f"n{i}"
            finally:
                conn.close()

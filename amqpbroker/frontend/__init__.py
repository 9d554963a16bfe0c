"""The front-end role: AMQP connections, channels, routing, and the clients of the partitions.

Runs in a front-end process (``python -m amqpbroker.frontend``), or in the supervisor when
there are no front-end processes. It reaches queues only through ``partition_client`` over a
link (``amqpbroker/links``) and changes metadata only by asking its owner; it never imports
the worker role.
"""

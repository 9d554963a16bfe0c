"""The worker role: the partition host and the queues it owns (logs, ready lists,
subscriptions with credit, unacked offsets, group commit, dead-lettering).

Runs in a worker process (``python -m amqpbroker.worker``), or in the supervisor with
``--workers 0``. It hears from front-ends only through a link (``amqpbroker/links``) and never
imports the front-end role.
"""

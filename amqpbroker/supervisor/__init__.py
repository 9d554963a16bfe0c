"""The process tree: the supervisor (``amqpbroker serve``) and its partition workers.

    supervisor (amqpbroker serve)          AMQP listener, connections, channels, routing,
     │                                     metadata and definitions, management HTTP
     ├─ worker 0   python -m amqpbroker.supervisor.worker
     ├─ worker 1   ...                     each owns the queues placed on it (by a hash of
     └─ ...                                vhost and name): logs, consumers, acks, commits

Between the supervisor and each worker: two shared-memory rings (one per direction) and their
eventfds, handed over as inherited descriptors. The rings' segments are unlinked from
/dev/shm before the worker starts, so no crash of either process can leave one behind; a
pipe tells the worker when the supervisor is gone (it then writes what it has and exits).

``workers.py`` starts, watches (pidfd) and restarts workers; ``worker.py`` is a worker's main.
"""

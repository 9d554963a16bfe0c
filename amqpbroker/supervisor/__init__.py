"""The process tree: the supervisor (``amqpbroker serve``) and its partition workers.

    supervisor (amqpbroker serve)          metadata and definitions, management HTTP,
     │                                     restarts; AMQP too when there are no front-ends
     ├─ front-end 0..F-1  python -m amqpbroker.frontend
     │                                     AMQP connections, channels, routing (a copy of the
     │                                     supervisor's metadata, kept current by ops)
     └─ worker 0..W-1     python -m amqpbroker.worker
                                           the queues placed on it (by a hash of vhost and
                                           name): logs, consumers, acks, group commit

Between a front-end (or the supervisor) and each worker: a link of two shared-memory rings
(one per direction) and their eventfds, handed over as descriptors. The rings' segments are
unlinked from /dev/shm as soon as they exist, so no crash can leave one behind. Each child also
has a control channel to the supervisor (``links/control.py``: metadata, new links, shutdown); its
EOF tells the child that the supervisor is gone.

The supervisor locks the data directory before anything else (``dirlock.py``: one broker
per directory) and hands the locked descriptor to its workers, so the lock lasts while any
process that writes the directory lives.

``workers.py`` / ``frontends.py`` start, watch (pidfd) and restart the children;
``worker/main.py`` / ``frontend/main.py`` are their mains; ``owner.py`` is the supervisor's
broker (the metadata owner); ``metadata.py`` says who changes metadata
and how front-ends follow.
"""

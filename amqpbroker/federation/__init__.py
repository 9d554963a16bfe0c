"""RabbitMQ's federation plugin (``rabbitmq_federation``, 3.10), AMQP 0-9-1: messages
published to an exchange (or waiting in a queue) on an *upstream* broker reach the exchange
(or the queue's consumers) of the same name on this one, the *downstream*, over links this
broker opens to the upstream, RabbitMQ among them.

What a user sets, as in RabbitMQ:

* runtime parameters of component ``federation-upstream`` (where: ``uri``; how: ``exchange``,
  ``queue``, ``prefetch-count``, ``max-hops``, ``ack-mode``, ``expires``, ...) and
  ``federation-upstream-set`` (a named list of upstreams): ``upstreams.py``;
* a policy whose definition names ``federation-upstream``, ``federation-upstream-set``
  (``all``: every upstream of the vhost) or ``federation-upstream-pattern``: each exchange or
  queue it applies to is federated from those upstreams, one link per upstream.

An **exchange link** (``links.ExchangeLink``) declares on the upstream a durable queue
``federation: X -> <cluster name>`` and an internal ``x-federation-upstream`` exchange bound
between the upstream exchange and that queue, repeats there every binding of the downstream
exchange (so only what would be routed downstream crosses), consumes the queue and publishes
each message to the downstream exchange with its routing key, acknowledging upstream by the
``ack-mode`` (``on-confirm``: once this broker confirmed it). ``hops.py`` is what messages and
bindings carry to stop cycles and count hops.

A **queue link** (``links.QueueLink``) consumes from the upstream queue, with priority -1,
only while the downstream queue has consumers and no message ready (RabbitMQ's rule: a
federated queue fetches when its own consumers would otherwise wait), and puts what it gets
into the downstream queue.

``registry.py`` keeps the parameters, works out from the policies which links should run,
starts and stops them as exchanges, queues, bindings, policies and parameters change, and
reports their status (``/api/federation-links``, ``mgmt/federation.py``). Links run in the
metadata owner (the supervisor's process); in a cluster, on the controller, as shovels do.
"""

"""RabbitMQ's dynamic shovels (the ``rabbitmq_shovel`` plugin, AMQP 0-9-1): runtime parameters
of component ``shovel`` that move messages from a source (a queue, or an exchange) to a
destination, on this broker or another one — RabbitMQ among them, which is how messages move
from a RabbitMQ node to this one.

``definition.py`` checks a definition as RabbitMQ does; ``runner.py`` moves the messages;
``shovels.py`` keeps the node's shovels and runs them in the supervisor's process.
"""

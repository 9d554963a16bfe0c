"""STOMP 1.0 / 1.1 / 1.2, as RabbitMQ's ``rabbitmq_stomp`` and ``rabbitmq_web_stomp``
plugins: ``frames.py`` (the codec), ``destinations.py`` (STOMP destinations and headers
onto AMQP), ``connection.py`` (one client, carried by an AMQP connection), ``listener.py``
(the ports)."""

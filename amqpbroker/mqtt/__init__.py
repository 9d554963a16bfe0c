"""MQTT 3.1 and 3.1.1, as RabbitMQ's ``rabbitmq_mqtt`` plugin speaks them (``--mqtt-port``).

Each MQTT connection is carried by an AMQP connection to this broker (``connection.py``),
so MQTT topics are routing keys of ``amq.topic`` (``topics.py``) and MQTT and AMQP clients
exchange messages both ways. ``frames.py`` is the packet codec, ``retained.py`` the retained
messages, ``listener.py`` the port and the client ids in use.
"""

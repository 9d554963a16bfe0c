"""RabbitMQ's stream protocol (rabbitmq_stream): port 5552."""

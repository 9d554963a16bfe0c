"""The management HTTP API: RabbitMQ's ``/api/...`` paths, JSON shapes and authorization.

Theory of operation. Every endpoint is one ``api.Route`` listed in the ``ROUTES`` of its
resource module (``overview``, ``vhosts``, ``users``, ``permissions``, ``queues``,
``exchanges``, ``bindings``, ``connections``, ``channels`` (and consumers), ``definitions``,
``limits``, ``health``, ``topics``). The server (``app.py``) runs each request through the same steps, in
RabbitMQ's order, before the handler sees it:

1. authenticate: basic auth against the broker's users; ``guest`` (any ``loopback_users``)
   only from a loopback address; only users tagged ``management``, ``policymaker``,
   ``monitoring`` or ``administrator`` get in at all (``access.py``);
2. authorize: the route's access rule, RabbitMQ's ``is_authorized_*`` (``access.py``);
3. read the body, if the route takes one: a POST must be ``application/json`` (415), the
   body must be a JSON object (400) that passes the route's schema (``validation.py``, 400);
4. call the handler with an ``api.Call`` (broker, user, path parameters, checked body, query
   string, headers);
5. a GET that returns a list is sorted, paged and cut to columns by the query string, as
   RabbitMQ's (``listing.py``).

Handlers that change things do it as a channel of the caller would: the same metadata calls
(``broker.metadata``), the caller's permissions, and an AMQP refusal answered as RabbitMQ's
management answers it (``api.from_amqp``: 403 is 401 "Access refused.", 404 is 404, the
rest 400 with the reply's text).

Refusals are ``api.ApiError`` and go out in RabbitMQ's shape,
``{"error": "bad_request", "reason": "..."}``.

Adding an endpoint: write ``async def handler(call)`` returning JSON data (200) or an
``api`` status (``created``, ``no_content``), and add
``Route("GET", "/api/things/{vhost}", handler, access.VHOST, body=SCHEMA)`` to its module's
``ROUTES`` (a new module goes into ``app.RESOURCES``). Pick the access rule RabbitMQ's
``rabbit_mgmt_wm_*`` module uses for the same path.
"""

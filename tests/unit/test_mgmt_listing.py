"""mgmt/listing.py's order, as RabbitMQ's management sorts: names by the bytes of their UTF-8
(RabbitMQ compares binaries), values of different types by Erlang's term order (absent,
numbers, booleans, strings), the endpoint's default keys after the asked one, dotted fields."""
from __future__ import annotations

from amqpbroker.mgmt import listing

NAMES = ["b", "a", "é", "z", "中", "Z", "\U0001F600", "\ufffd", "aa", "", "A-1"]


def names(items):
    return [i["name"] for i in items]


def test_names_sort_as_their_utf8_bytes():
    items = [{"name": n, "vhost": "/"} for n in NAMES]
    assert names(listing.shape(items, {})) == sorted(NAMES, key=lambda n: n.encode())
    assert names(listing.shape(items, {"sort_reverse": "true"})) == \
        sorted(NAMES, key=lambda n: n.encode(), reverse=True)


def test_types_sort_absent_numbers_booleans_strings_then_default_keys():
    items = [{"name": "s", "vhost": "/", "x": "text"}, {"name": "t", "vhost": "/", "x": True},
             {"name": "n2", "vhost": "/", "x": 2.5}, {"name": "n1", "vhost": "/", "x": 1},
             {"name": "absent", "vhost": "/"}, {"name": "n0", "vhost": "b", "x": 1},
             {"name": "n0", "vhost": "a", "x": 1}]
    assert [(i["vhost"], i["name"]) for i in listing.shape(items, {"sort": "x"})] == [
        ("/", "absent"), ("/", "n1"), ("a", "n0"), ("b", "n0"), ("/", "n2"), ("/", "t"),
        ("/", "s")]


def test_dotted_field_and_page():
    items = [{"name": f"q{i}", "vhost": "/", "message_stats": {"publish": i % 3}}
             for i in range(7)]
    page = listing.shape(items, {"sort": "message_stats.publish", "page": "1",
                                 "page_size": "3", "columns": "name"})
    assert page["items"] == [{"name": "q0"}, {"name": "q3"}, {"name": "q6"}]
    assert (page["total_count"], page["page_count"]) == (7, 3)

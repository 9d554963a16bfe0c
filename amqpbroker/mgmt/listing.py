"""What every list endpoint does with its query string, as RabbitMQ's ``rabbit_mgmt_util``
(``reply_list``, ``filter_and_paginate``, ``columns``).

* ``sort=field`` (dotted for nested: ``message_stats.publish``), then the endpoint's default
  sort keys (``vhost``, ``name`` for most), and ``sort_reverse=true`` reverses the whole order.
  Items without the field sort first (RabbitMQ compares them as ``undefined``), so an unknown
  field leaves the default order;
* ``page`` (from 1) turns paging on: ``page_size`` (default 100, 1..500), ``name`` filters on
  the name (case-insensitive: a substring, or with ``use_regex=true`` a regular expression),
  and the answer is RabbitMQ's envelope (``filtered_count``, ``item_count``, ``items``,
  ``page``, ``page_count``, ``page_size``, ``total_count``); without ``page``, ``name`` is
  ignored, as RabbitMQ ignores it;
* ``columns=a,b.c`` keeps only those fields of each item, and of one object (``b.c`` keeps
  ``b`` with only ``c`` inside it); unknown columns are left out.

Refusals are 400 with RabbitMQ's errors and reasons (``invalid_pagination_parameters``,
``page_out_of_range``, ``bad_request``: "Pagination parameters are invalid").
"""
from __future__ import annotations

import math
import re

from .. import pcre
from .api import ApiError

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
DEFAULT_SORT = ("vhost", "name")


def shape(items: list, query, default_sort=DEFAULT_SORT):
    """``items`` sorted, paged and cut to the columns the query string asks for."""
    page = _page(query)
    sort = query.get("sort")
    keys = ([sort] if sort else []) + [k for k in default_sort if k != sort]
    items = sorted(items, key=_sort_key(keys))
    if query.get("sort_reverse") == "true":
        items.reverse()
    columns = query.get("columns")
    if page is None:
        return _columns(items, columns)
    number, size = page
    total = len(items)
    name = query.get("name")
    if name:
        items = [i for i in items if _name_matches(i, name, query.get("use_regex") == "true")]
    filtered = len(items)
    pages = math.ceil(filtered / size)
    if number > 1 and number > pages:
        raise ApiError(400, f"Page out of range, page: {number} page size: {size}, "
                            f"len: {filtered}", "page_out_of_range")
    chosen = items[(number - 1) * size:number * size]
    return {"filtered_count": filtered, "item_count": len(chosen),
            "items": _columns(chosen, columns), "page": number, "page_count": pages,
            "page_size": size, "total_count": total}


def chosen_by(query, fields) -> bool:
    """Whether the page a query asks for is chosen by ``fields`` alone (it sorts by one of
    them, or by default): a handler may then page light items and build whole ones, whose
    counts cost a request to a worker, for that page only (``page_first``)."""
    return query.get("page") is not None and (query.get("sort") or "name") in fields


async def page_first(light: list, query, build, default_sort=DEFAULT_SORT) -> dict:
    """The page of ``light`` items the query asks for, its items replaced by
    ``await build(chosen light items)`` and cut to the query's columns."""
    page = shape(light, {k: v for k, v in query.items() if k != "columns"}, default_sort)
    page["items"] = _columns(await build(page["items"]), query.get("columns"))
    return page


def _page(query):
    """(page, page size), or None when the query does not ask for a page."""
    raw_page, raw_size = query.get("page"), query.get("page_size")
    if raw_page is None:
        return None
    try:
        number = int(raw_page)
        size = DEFAULT_PAGE_SIZE if raw_size is None else int(raw_size)
    except ValueError:
        raise ApiError(400, "Pagination parameters are invalid") from None
    if number < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        shown = "undefined" if raw_size is None else size
        raise ApiError(400, f"Invalid pagination parameters: page number {number}, page size "
                            f"{shown}", "invalid_pagination_parameters")
    regex = query.get("name") if query.get("use_regex") == "true" else None
    if regex:
        try:
            pcre.compile(regex, re.IGNORECASE)
        except re.error:
            raise ApiError(400, "Pagination parameters are invalid") from None
    return number, size


def _name_matches(item: dict, name: str, regex: bool) -> bool:
    value = item.get("name")
    if not isinstance(value, str):
        return False
    if regex:
        return pcre.search(name, value, re.IGNORECASE)
    return name.lower() in value.lower()


def _sort_key(keys):
    """The sort key of ``keys`` (fields, dotted for nested ones): a tuple of ``_rank``s,
    built without a generator or a split per item (a page of 10,000 queues sorts them all)."""
    getters = [_getter(k) for k in keys]
    if len(getters) == 1:
        g0, = getters
        return lambda item: (_rank(g0(item)),)
    if len(getters) == 2:
        g0, g1 = getters
        return lambda item: (_rank(g0(item)), _rank(g1(item)))
    return lambda item: tuple([_rank(g(item)) for g in getters])


def _getter(dotted: str):
    if "." not in dotted:
        return lambda item: item.get(dotted) if type(item) is dict else None
    return lambda item: _field(item, dotted)


def _field(item: dict, dotted: str):
    value = item
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _rank(value):
    """An order across JSON types, as Erlang's term order puts numbers before atoms before
    binaries: absent, then numbers, then booleans, then strings, then the rest (as text).
    The first element keeps values of different types from being compared."""
    if type(value) is str:      # the usual key first
        # code point order is the byte order of UTF-8, which RabbitMQ compares
        return (3, value)
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (3, str(value))
    return (4, repr(value))


def one_object(item: dict, query) -> dict:
    """A GET of one object (``/api/overview``, ``/api/queues/{vhost}/{name}``) cut to the
    query's columns, as RabbitMQ cuts them. A page of a list (the envelope ``page_first``
    returns: its items are cut already) is left as it is."""
    if "items" in item and "page_count" in item:
        return item
    return _columns([item], query.get("columns"))[0]


def _columns(items: list, columns: str | None) -> list:
    if not columns:
        return items
    wanted: dict = {}
    for col in columns.split(","):
        parts = [p for p in col.strip().split(".") if p]
        node = wanted
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                node[part] = None                   # the whole value
            else:
                node = node.setdefault(part, {})
                if node is None:
                    break
    return [_pick(item, wanted) for item in items]


def _pick(value, wanted):
    if wanted is None or not isinstance(value, dict):
        return value
    return {k: _pick(value[k], sub) for k, sub in wanted.items() if k in value}

"""RabbitMQ's reply texts print values as Erlang terms (``~p``): JSON values printed so."""
from __future__ import annotations


def erlang_term(value) -> str:
    """A JSON value as RabbitMQ's reasons print it (Erlang's ``~p`` of the decoded JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):                # 1e+100 -> 1.0e100, as Erlang prints it
        mantissa, _, exponent = repr(value).partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        return mantissa + (f"e{int(exponent)}" if exponent else "")
    if isinstance(value, str):
        return '<<"' + value.replace("\\", "\\\\").replace('"', '\\"') + '">>'
    if isinstance(value, list):
        return "[" + ",".join(erlang_term(v) for v in value) + "]"
    return "#{" + ",".join(f"{erlang_term(k)} => {erlang_term(v)}"
                           for k, v in value.items()) + "}"

"""Argument types shared by the command families."""
from __future__ import annotations

import argparse
import json


def key_values(text: str) -> tuple:
    """``KEY=VALUE``, the value as JSON when it parses (``100``, ``true``, ``{"a":1}``),
    else the text itself."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def json_object(text: str) -> dict:
    """A JSON object (a policy's or a shovel's definition)."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value

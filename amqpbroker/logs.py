"""The broker's log: text for people (the format it always had), or one JSON object per line
for machines (``--log-format json``).

A JSON line has ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``msg`` (the
text line's message, the same words), ``pid`` and ``role`` (``supervisor``, ``frontend1``,
``worker0``: which process of the broker wrote it), then the context the event was logged
with: ``connection`` (RabbitMQ's name, ``127.0.0.1:50312 -> 127.0.0.1:5672``), ``user``,
``vhost``, ``queue``, ``channel``, ``alarm``, ``child`` (a restarted process), and ``exc``
(a traceback) when there is one. A log site gives context as ``extra=context(...)``; the
text format leaves it out, since its message already says it.

Every event worth an operator's attention is logged once, by the process that owns it:
connections and their login failures by the front-end that holds the socket; alarms by the
supervisor (front-ends only mirror them); queue recovery by the worker that opens the queue;
child restarts by the supervisor.
"""
from __future__ import annotations

import json
import logging
import sys
import time

CONTEXT = ("connection", "user", "vhost", "queue", "channel", "alarm", "child")
FORMATS = ("text", "json")


def context(**fields) -> dict:
    """``extra=`` for a log call: the fields given and not None."""
    return {k: v for k, v in fields.items() if v is not None}


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name,
                "msg": record.getMessage(), "pid": record.process, "role": self.role}
        for key in CONTEXT:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup(level: str, fmt: str = "text", role: str = "supervisor") -> None:
    """Log to stderr at ``level`` in ``fmt``; ``role`` names this process (for the text
    format, children prefix their logger names with it, as they always have)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        prefix = "" if role == "supervisor" else role + " "
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))

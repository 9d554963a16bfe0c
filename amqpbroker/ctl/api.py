"""The management API as ``ctl`` sees it: one HTTP client, the errors a command can end
with (each an exit status), and the two outputs (an aligned table for people, JSON for
scripts).

Exit statuses, which scripts may rely on:

    0  done
    1  refused by the broker (a 4xx/5xx answer): the API's reason is printed on stderr
    2  usage: a bad command line (argparse's status) or an unreadable input file
    3  cannot connect: nothing answers at --url (refused, unknown host, timeout, TLS)
"""
from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3


class CtlError(Exception):
    """A command that cannot finish; ``status`` is the exit status."""
    status = REFUSED


class Refused(CtlError):
    """The broker answered with an error: ``code`` is the HTTP status, the message the
    API's reason."""
    status = REFUSED

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code


class Unreachable(CtlError):
    status = UNREACHABLE


class Usage(CtlError):
    status = USAGE


class Api:
    """Basic-auth JSON calls to one management API (ours or RabbitMQ's)."""

    def __init__(self, url: str, user: str, password: str, timeout: float = 60):
        self.base = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.timeout = timeout

    def call(self, method: str, path: str, body=None, headers=None, ok=(), what=None):
        """The decoded JSON answer (None when empty). A 4xx/5xx raises ``Refused`` unless
        its code is in ``ok`` (then its body is returned: a failed health check is an
        answer, not an error); a 404 says "``what`` not found" when ``what`` is given
        (the API's 404 reason is only "Not Found")."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return _decode(resp.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            if err.code in ok:
                return _decode(raw)
            if err.code == 404 and what:
                raise Refused(404, f"{what} not found") from None
            raise Refused(err.code, _reason(err.code, raw)) from None
        except (urllib.error.URLError, OSError) as err:
            why = getattr(err, "reason", err)
            raise Unreachable(f"cannot connect to {self.base}: {why}") from None


def _decode(raw: bytes):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _reason(code: int, raw: bytes) -> str:
    """RabbitMQ's error shape is ``{"error": ..., "reason": ...}``; say the reason."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("reason"):
        reason = body["reason"]
        return reason if isinstance(reason, str) else json.dumps(reason)
    text = raw.decode(errors="replace").strip()
    return f"HTTP {code}" + (f": {text}" if text else "")


def vhost(args) -> str:
    """What a 404 on a vhost's list means."""
    return f"vhost '{args.vhost}'"


def q(name: str) -> str:
    """A vhost or object name as one path segment (``/`` is ``%2F``)."""
    return urllib.parse.quote(name, safe="")


# ------------------------------------------------------------------ output
def add_output_flags(p, columns) -> None:
    """``--format`` and ``--columns`` for a list command, ``columns`` its default ones."""
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="aligned table for people (default) or JSON for scripts (the "
                        "API's objects whole, unless --columns names fields)")
    p.add_argument("--columns", type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
                   help=f"comma-separated fields to show (default {','.join(columns)}); "
                        "any field of the API's objects, dotted for nested ones "
                        "(message_stats.publish_details.rate)")
    p.set_defaults(default_columns=list(columns))


def field(obj, path: str):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def emit(rows: list, args, out=None) -> None:
    """Print ``rows`` (the API's objects) as ``args.format`` asks: a table of ``--columns``
    (else the command's default columns), or JSON, whole or cut to ``--columns``."""
    out = out or sys.stdout
    cols = args.columns or args.default_columns
    if args.format == "json":
        shown = rows if args.columns is None else [{c: field(r, c) for c in cols}
                                                    for r in rows]
        json.dump(shown, out, indent=2)
        out.write("\n")
        return
    out.write(table(cols, [[field(r, c) for c in cols] for r in rows]))


def table(header: list, rows: list) -> str:
    """An aligned table: a header line, then one line per row; numbers right-aligned."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                   for row in rows) and rows for i in range(len(header))]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":")) if value else ""
    return str(value)


def say(text: str) -> None:
    """What a changing command did, in one plain line on stdout."""
    print(text)

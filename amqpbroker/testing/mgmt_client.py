"""A management API client for tests: raw HTTP as any user, with any body and content
type, answering (status, JSON or text, headers) instead of raising on 4xx, so a test sees
exactly what went on the wire. ``ManagementClient(url)`` takes ``http://host:port`` (any
credentials in it are ignored: each request names its user)."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

JSON = "application/json"


class ManagementClient:
    def __init__(self, mgmt_url: str):
        u = urllib.parse.urlparse(mgmt_url)
        self.base = f"{u.scheme}://{u.hostname}:{u.port}"

    def request(self, method: str, path: str, user: str | None, password: str = "", *,
                body=None, raw: bytes | None = None, content_type: str | None = JSON,
                headers: dict | None = None, timeout: float = 10):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if user is not None:
            cred = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", "Basic " + cred)
        if data is not None and content_type is not None:
            req.add_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, text, hdrs = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            status, text, hdrs = err.code, err.read(), err.headers
        try:
            value = json.loads(text) if text else None
        except ValueError:
            value = text.decode(errors="replace")
        return status, value, hdrs

    def get(self, path: str, user: str, password: str):
        status, value, _ = self.request("GET", path, user, password)
        return status, value


def q(name: str) -> str:
    """One path segment, quoted (vhost '/' is '%2F')."""
    return urllib.parse.quote(name, safe="")

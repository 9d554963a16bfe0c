#!/usr/bin/env python3
"""``rabbitmqctl`` as RabbitMQ's STOMP suite calls it (``test_util.rabbitmqctl``), answered
through the management API of the broker under test (``$STAND_IN_MGMT_URL``):

    -n NODE set_topic_permissions USER EXCHANGE WRITE READ
    -n NODE clear_topic_permissions USER
    -n NODE eval EXPR      the suite switches the STOMP plugin's default user on and off
                           with it; this broker's is always on: ok, nothing done

Anything else exits 2 and says so."""
import base64
import json
import os
import sys
import urllib.parse
import urllib.request


def call(method: str, path: str, body=None) -> None:
    url = urllib.parse.urlsplit(os.environ["STAND_IN_MGMT_URL"])
    request = urllib.request.Request(
        f"{url.scheme}://{url.hostname}:{url.port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json", "authorization": "Basic " +
                 base64.b64encode(f"{url.username}:{url.password}".encode()).decode()})
    urllib.request.urlopen(request, timeout=30).read()


def main(argv: list[str]) -> int:
    if argv[:1] == ["-n"]:
        argv = argv[2:]
    command, rest = argv[0], argv[1:]
    if command == "set_topic_permissions":
        user, exchange, write, read = rest
        call("PUT", f"/api/topic-permissions/%2F/{urllib.parse.quote(user, safe='')}",
             {"exchange": exchange, "write": write, "read": read})
    elif command == "clear_topic_permissions":
        call("DELETE", f"/api/topic-permissions/%2F/{urllib.parse.quote(rest[0], safe='')}")
    elif command == "eval":
        pass
    else:
        print(f"ctl_stand_in: {command} is not answered here", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

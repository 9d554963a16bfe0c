"""STOMP clients for tests: stomp.py on its own receiver thread (``Client``), and a raw
socket for what a well-behaved client never sends (``Raw``). Every wait is on a callback's
queue or a socket read with a timeout."""
from __future__ import annotations

import queue
import socket

import stomp

from ..stomp.frames import Frame, Parser, serialize

TIMEOUT = 15


class Client(stomp.ConnectionListener):
    """stomp.py (1.0, 1.1 or 1.2; over a WebSocket with ``ws_path``): what arrives lands in
    ``messages``, ``errors``, ``receipts`` (stomp.py frames)."""

    def __init__(self, address: tuple, *, version: str = "1.2", login="guest",
                 passcode="guest", vhost="/", ws_path=None, heartbeats=(0, 0), connect=True,
                 headers=None):
        self.messages: queue.Queue = queue.Queue()
        self.errors: queue.Queue = queue.Queue()
        self.receipts: queue.Queue = queue.Queue()
        self.disconnected: queue.Queue = queue.Queue()
        kw = {"heartbeats": heartbeats, "auto_content_length": True,
              "reconnect_attempts_max": 1}
        if ws_path is not None:
            self.c = stomp.WSStompConnection([address], ws_path=ws_path, vhost=vhost, **kw)
        elif version == "1.0":
            kw.pop("heartbeats")
            self.c = stomp.Connection10([address], **kw)
        else:
            cls = stomp.Connection11 if version == "1.1" else stomp.Connection12
            self.c = cls([address], vhost=vhost, **kw)
        self.c.set_listener("", self)
        if connect:
            self.c.connect(login, passcode, wait=True, headers=headers or {})

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame)

    def on_disconnected(self):
        self.disconnected.put(True)

    def message(self):
        return self.messages.get(timeout=TIMEOUT)

    def error(self):
        return self.errors.get(timeout=TIMEOUT)

    def receipt(self) -> str:
        return self.receipts.get(timeout=TIMEOUT).headers["receipt-id"]

    def subscribe(self, destination: str, sub_id: str, **headers) -> None:
        """Subscribed once its RECEIPT came: the queue is bound and consumed."""
        self.c.subscribe(destination, sub_id, receipt=f"sub-{sub_id}", **headers)
        assert self.receipt() == f"sub-{sub_id}"

    def close(self) -> None:
        """DISCONNECT, and wait for its RECEIPT (stomp.py's ``disconnect`` does not: it
        returns once the frame is sent). The broker sends that receipt once this client's
        consumers are gone, so what is published after ``close`` is not delivered here."""
        try:
            if self.c.is_connected():
                self.c.disconnect(receipt="disconnect")
                self.disconnected.get(timeout=TIMEOUT)  # stomp.py drops the socket on it
        except Exception:                           # noqa: BLE001 - closing anyway
            pass


class Raw:
    """A socket that speaks frames as given, and reads what comes back."""

    def __init__(self, address: tuple, connect: bool = True, version: str = "1.2"):
        self.s = socket.create_connection(address, timeout=TIMEOUT)
        self.parser = Parser(1 << 24, every_length=True)
        self.frames: list[Frame] = []
        if connect:
            self.send("CONNECT", [("accept-version", version), ("host", "/"),
                                  ("login", "guest"), ("passcode", "guest")])
            assert self.read().command == "CONNECTED"

    def send(self, command: str, headers=(), body: bytes = b"") -> None:
        self.s.sendall(serialize(command, list(headers), body))

    def sendall(self, data: bytes) -> None:
        self.s.sendall(data)

    def read(self) -> Frame | None:
        """The next frame, None when the broker closed the socket."""
        while not self.frames:
            data = self.s.recv(65536)
            if not data:
                return None
            self.frames += self.parser.feed(data)
        return self.frames.pop(0)

    def closed_by_broker(self) -> bool:
        try:
            while self.read() is not None:
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.s.close()

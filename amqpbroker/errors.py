"""The error tree is the AMQP 0-9-1 reply-code table.

Deep code raises; exactly one boundary (``frontend/session.py``) turns an error into a reply:
a ``ChannelError`` becomes ``channel.close`` and only that channel ends, a ``ConnectionError_``
becomes ``connection.close``. Reply texts follow RabbitMQ's wording
(``NOT_FOUND - no queue 'jobs' in vhost '/'``) because that is what users search for.
"""
from __future__ import annotations

REPLY_NAMES = {
    200: "REPLY_SUCCESS",
    311: "CONTENT_TOO_LARGE",
    312: "NO_ROUTE",
    313: "NO_CONSUMERS",
    320: "CONNECTION_FORCED",
    402: "INVALID_PATH",
    403: "ACCESS_REFUSED",
    404: "NOT_FOUND",
    405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED",
    501: "FRAME_ERROR",
    502: "SYNTAX_ERROR",
    503: "COMMAND_INVALID",
    504: "CHANNEL_ERROR",
    505: "UNEXPECTED_FRAME",
    506: "RESOURCE_ERROR",
    530: "NOT_ALLOWED",
    540: "NOT_IMPLEMENTED",
    541: "INTERNAL_ERROR",
}


class AMQPError(Exception):
    """An AMQP exception with its reply code; ``text`` is the detail after the code name."""

    reply_code = 541
    hard = True

    def __init__(self, text: str, class_id: int = 0, method_id: int = 0, reply_code: int | None = None):
        super().__init__(text)
        if reply_code is not None:
            self.reply_code = reply_code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        text = f"{REPLY_NAMES.get(self.reply_code, 'ERROR')} - {self.text}"
        # a shortstr holds 255 bytes, not characters: cut the UTF-8, not the str
        return text.encode()[:255].decode("utf-8", "ignore")


class ChannelError(AMQPError):
    """Soft error: closes the channel only."""
    hard = False


class ConnectionError_(AMQPError):
    """Hard error: closes the connection."""
    hard = True


def _soft(code: int, name: str):
    return type(name, (ChannelError,), {"reply_code": code})


def _hard(code: int, name: str):
    return type(name, (ConnectionError_,), {"reply_code": code})


ContentTooLarge = _soft(311, "ContentTooLarge")
AccessRefused = _soft(403, "AccessRefused")
NotFound = _soft(404, "NotFound")
ResourceLocked = _soft(405, "ResourceLocked")
PreconditionFailed = _soft(406, "PreconditionFailed")

ConnectionForced = _hard(320, "ConnectionForced")
InvalidPath = _hard(402, "InvalidPath")
ConnectionAccessRefused = _hard(403, "ConnectionAccessRefused")
FrameError = _hard(501, "FrameError")
SyntaxError_ = _hard(502, "SyntaxError_")
CommandInvalid = _hard(503, "CommandInvalid")
ChannelErrorHard = _hard(504, "ChannelErrorHard")
UnexpectedFrame = _hard(505, "UnexpectedFrame")
ResourceError = _hard(506, "ResourceError")
NotAllowed = _hard(530, "NotAllowed")
NotImplemented_ = _hard(540, "NotImplemented_")
InternalError = _hard(541, "InternalError")


def queue_down(vhost: str, name: str, reason: str, class_id: int = 0,
               method_id: int = 0) -> ChannelError:
    """A queue that is defined but could not be opened (its data is kept): RabbitMQ's 404
    for a crashed queue, with why."""
    return NotFound(f"queue '{name}' in vhost '{vhost}' has crashed and failed to restart: "
                    f"{reason}", class_id, method_id)


def erl_string(text: str) -> str:
    """Erlang's ``~p`` of a string, as RabbitMQ prints reasons into reply texts: quoted when
    printable, else the list of character codes."""
    if all(32 <= ord(c) < 127 for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ",".join(str(ord(c)) for c in text) + "]"


def erl_binary(data: bytes) -> str:
    """Erlang's ``~p`` of a binary: <<"text">> when printable, else <<1,2,3>>."""
    if data and all(32 <= b < 127 for b in data):
        return "<<" + erl_string(data.decode()) + ">>"
    return "<<" + ",".join(str(b) for b in data) + ">>"


def from_reply(hard: bool, code: int, text: str, class_id: int, method_id: int) -> AMQPError:
    """Rebuild an error that crossed a process boundary as (hard, code, text, class, method)."""
    base = ConnectionError_ if hard else ChannelError
    return base(text, class_id, method_id, reply_code=code)


def to_reply(err: AMQPError) -> tuple:
    return (bool(err.hard), err.reply_code, err.text, err.class_id, err.method_id)

"""Deliveries of one aiormq channel, collected in arrival order, for tests that wait for a
count of them rather than sleep."""
from __future__ import annotations

import asyncio


class Collector:
    """``on_message`` is the consumer callback; ``await wait(n)`` returns once n deliveries
    arrived (``got``), and fails after ``timeout`` seconds."""

    def __init__(self, timeout: float = 30):
        self.got: list = []
        self.timeout = timeout
        self._want = 0
        self._done: asyncio.Future | None = None

    async def on_message(self, message) -> None:
        self.got.append(message)
        if self._done is not None and len(self.got) >= self._want and not self._done.done():
            self._done.set_result(None)

    async def wait(self, n: int) -> None:
        if len(self.got) >= n:
            return
        self._want = n
        self._done = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self._done, self.timeout)

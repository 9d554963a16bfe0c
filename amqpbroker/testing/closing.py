"""``closing_clients``: a factory of clients that closes every one it made, for fixtures."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def closing_clients(factory):
    """Yields ``make(*args, **kw)``: ``factory(*args, **kw)``, each closed on the way out."""
    made = []

    def make(*args, **kw):
        made.append(factory(*args, **kw))
        return made[-1]
    try:
        yield make
    finally:
        for client in made:
            client.close()

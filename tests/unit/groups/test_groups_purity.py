"""The groups package is the pure core the supervisor and the workers both call: it imports
neither frontend/ nor worker/ (nor anything above storage/), and nothing in it reads a clock,
opens a socket or runs an event loop (time comes in as `now`)."""
import ast
import os

import amqpbroker.groups

PACKAGE = os.path.dirname(amqpbroker.groups.__file__)
FORBIDDEN = {"asyncio", "socket", "time", "datetime", "selectors", "uvloop"}


def imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


def test_imports_only_storage_and_siblings_and_no_clock_or_io_loop():
    seen = set()
    for name in sorted(os.listdir(PACKAGE)):
        if not name.endswith(".py"):
            continue
        for level, module in imports(os.path.join(PACKAGE, name)):
            seen.add((level, module))
            top = module.split(".")[0]
            if level == 0:
                assert top != "amqpbroker", f"{name}: absolute import of {module}"
                assert top not in FORBIDDEN, f"{name} imports {module}"
            elif level == 2:
                assert top == "storage", f"{name} imports ..{module}"
            else:
                assert level == 1, f"{name}: import reaching above amqpbroker/"
    assert (2, "storage.fileformat") in seen       # the check saw the offset store's imports

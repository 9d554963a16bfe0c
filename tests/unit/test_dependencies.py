"""Every package the broker imports (``amqpbroker`` but its ``testing`` helpers, and ``shm``)
is one ``setup.py`` installs: ``pip install . && amqpbroker serve`` in a fresh virtualenv
needs nothing the test extras happen to bring (the shovels' pika once came only with them)."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"amqpbroker", "shm", "cffi_build"}


def install_requires() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return {_normal(re.split(r"[<>=!~;\[ ]", ast.literal_eval(e))[0])
                    for e in node.value.elts}
    raise AssertionError("setup.py has no install_requires")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_packages() -> dict[str, str]:
    """{top-level module: a file importing it} of the broker's own modules."""
    out = {}
    for package in ("amqpbroker", "shm"):
        for path in (ROOT / package).rglob("*.py"):
            if "testing" in path.relative_to(ROOT).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 \
                    and node.module else []
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OURS:
                        out.setdefault(top, str(path.relative_to(ROOT)))
    return out


def test_every_imported_package_is_installed_by_setup_py():
    required = install_requires()
    dists = packages_distributions()
    missing = {module: where for module, where in imported_packages().items()
               if not {_normal(d) for d in dists.get(module, [module])} & required}
    assert not missing, f"imported but not in install_requires: {missing}"

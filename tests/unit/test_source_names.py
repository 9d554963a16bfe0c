"""No module defines a top-level function or class twice: the second silently replaces the
first for every caller after it (stop 35: a test helper ``publish_keyed`` added at the end of
a test module replaced one of the same name above it, and seven tests that used the first
failed in CI)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("amqpbroker", "tests", "interop", "bench", "shm", "cffi_build")


def test_no_module_defines_a_top_level_name_twice():
    twice = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            seen: dict[str, int] = {}
            for node in ast.parse(path.read_text(), str(path)).body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    if node.name in seen:
                        twice.append(f"{path.relative_to(ROOT)}: {node.name} at lines "
                                     f"{seen[node.name]} and {node.lineno}")
                    seen[node.name] = node.lineno
    assert twice == []

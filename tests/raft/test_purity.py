"""node/raft/ is pure: no I/O, clock, thread or global randomness (checked on the source)."""

import ast
from pathlib import Path

RAFT_DIR = Path(__file__).resolve().parents[2] / "node" / "raft"
FORBIDDEN_MODULES = {
    "asyncio", "lmdb", "msgpack", "multiprocessing", "os", "select", "selectors", "signal",
    "socket", "subprocess", "sys", "threading", "time", "zmq", "datetime", "pathlib", "io",
}


def raft_modules() -> list[Path]:
    modules = sorted(RAFT_DIR.glob("*.py"))
    assert len(modules) >= 10, modules  # guards against a wrong path making the test vacuous
    return modules


def purity_violations(source: str) -> list[str]:
    violations = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    violations.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in FORBIDDEN_MODULES:
                violations.append(f"from {node.module} import ...")
            if module == "random" and any(alias.name != "Random" for alias in node.names):
                violations.append("from random import a module-level function")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "random" and node.attr != "Random":
                violations.append(f"random.{node.attr} (use the injected random.Random)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("open", "__import__", "exec", "eval", "print", "input"):
                violations.append(f"{node.func.id}()")
    return violations


def test_every_raft_module_is_pure():
    found = {path.name: purity_violations(path.read_text()) for path in raft_modules()}
    assert {name: violations for name, violations in found.items() if violations} == {}


def test_the_checker_catches_forbidden_imports():
    assert purity_violations("import time\nfrom zmq import Context\nimport os.path") == [
        "import time", "from zmq import ...", "import os.path"]
    assert purity_violations("import random\nrandom.randint(1, 2)") == [
        "random.randint (use the injected random.Random)"]
    assert purity_violations("from random import choice") == ["from random import a module-level function"]
    assert purity_violations("import random\ndef f(rng: random.Random): return rng.random()") == []

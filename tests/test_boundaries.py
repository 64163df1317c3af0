"""Layer boundaries, checked on the source: the client library (sandctl/) uses only the wire
contract of node/ (protocol, errors, config, chunk ids, address helpers), never the node's
storage, chunk store, Raft core, replicator or server, and never lmdb.

Imports are read with ast from every sandctl module and followed transitively through the node
modules they reach, so a node module that starts importing the chunk store is caught here too.
A runtime check confirms it: importing the CLI and the client loads none of those modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The node modules sandctl may reach: the wire protocol and what it is built from.
SANDCTL_MAY_USE = frozenset({
    "node",
    "node.protocol",
    "node.packing",  # protocol's msgpack packer
    "node.errors",
    "node.config",
    "node.chunk_ids",
    "node.large_buffers",  # the allocator thresholds the sandctl process and the nodes use
    "node.transport",
    "node.transport.address",
    # The trust boundary's client half: keys, roles, and the socket settings a DEALER needs.
    "node.names",
    "node.security",
    "node.security.authorization",
    "node.security.errors",
    "node.security.keyring",
    "node.security.sockets",
    "node.security.zap",
})
FORBIDDEN_LIBRARIES = frozenset({"lmdb"})
# (module, library) pairs allowed anyway, each with its reason. The benchmark measures this
# machine's synced LMDB commits as the reference for the node's write figures; it imports lmdb
# inside that one function, so importing sandctl still loads no lmdb (the runtime test).
EXEMPTIONS = frozenset({("sandctl.bench_machine", "lmdb")})

Sources = Callable[[str], "str | None"]  # module name -> its source, None if not ours


def _source_on_disk(module: str) -> str | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.read_text()
    return None


def imported_modules(module: str, source: str, sources: Sources) -> set[str]:
    """Every module `source` imports, anywhere in it; `from pkg import name` counts as
    pkg.name when that is a module of ours, else as pkg."""
    found: set[str] = set()
    package = module if sources(module + ".__init__") is not None else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            for alias in node.names:
                if sources(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
    return found


def boundary_violations(roots: list[str], sources: Sources) -> list[str]:
    """Each forbidden import reachable from `roots`, as "importer -> imported (via chain)"."""
    violations = []
    chains: dict[str, list[str]] = {root: [root] for root in roots}
    queue = list(roots)
    while queue:
        module = queue.pop(0)
        source = sources(module)
        assert source is not None, module
        for imported in sorted(imported_modules(module, source, sources)):
            chain = chains[module] + [imported]
            top = imported.split(".")[0]
            if top in FORBIDDEN_LIBRARIES and (module, top) not in EXEMPTIONS:
                violations.append(f"{module} -> {imported} (via {' -> '.join(chain)})")
            if top == "node" and imported not in SANDCTL_MAY_USE:
                violations.append(f"{module} -> {imported} (via {' -> '.join(chain)})")
                continue  # one finding per forbidden module, not everything behind it
            if imported not in chains and sources(imported) is not None:
                chains[imported] = chain
                queue.append(imported)
    return violations


def sandctl_modules() -> list[str]:
    modules = sorted("sandctl." + path.stem for path in (ROOT / "sandctl").glob("*.py") if path.stem != "__init__")
    assert len(modules) >= 10 and "sandctl.client" in modules, modules  # a wrong path must not pass vacuously
    return modules


def test_sandctl_uses_only_the_wire_contract_of_node():
    assert boundary_violations(sandctl_modules(), _source_on_disk) == []


def test_importing_the_cli_and_the_client_loads_no_storage_engine():
    forbidden = sorted(FORBIDDEN_LIBRARIES) + ["node.chunks", "node.storage", "node.raft", "node.metadata",
                                               "node.server", "node.replicator"]
    script = (
        "import sys, sandctl.cli, sandctl.client, sandctl.transfer, sandctl.connection, sandctl.failover, sandctl.async_client\n"
        f"loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {forbidden!r}))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_checker_catches_forbidden_imports_directly_and_through_node():
    fake = {
        "sandctl.good": "from node import protocol\nfrom node.errors import NotFound\n",
        "sandctl.direct": "import lmdb\n",
        "sandctl.via_node": "from node.chunks.store import chunk_id_of\n",
        "sandctl.via_allowed": "from node import config\n",
        "sandctl.bench_machine": "def measure():\n    import lmdb\n",
        "node.protocol": "import msgpack\nfrom node.errors import BadRequest\n",
        "node.errors": "",
        "node.config": "from node.storage import layout\n",  # an allowed module that went bad
        "node.storage.layout": "import lmdb\n",
        "node.chunks.store": "import lmdb\n",
        "node.__init__": "", "node": "",
    }
    sources = fake.get
    assert boundary_violations(["sandctl.good"], sources) == []
    assert boundary_violations(["sandctl.bench_machine"], sources) == []  # the documented exemption
    assert boundary_violations(["sandctl.direct"], sources) == ["sandctl.direct -> lmdb (via sandctl.direct -> lmdb)"]
    assert boundary_violations(["sandctl.via_node"], sources) == [
        "sandctl.via_node -> node.chunks.store (via sandctl.via_node -> node.chunks.store)"]
    assert boundary_violations(["sandctl.via_allowed"], sources) == [
        "node.config -> node.storage (via sandctl.via_allowed -> node.config -> node.storage)",
        "node.config -> node.storage.layout (via sandctl.via_allowed -> node.config -> node.storage.layout)"]

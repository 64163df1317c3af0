"""The fsck report: every file under a path with the health of its worst chunk, and totals.

Built on the leader from its namespace (the files and their recorded replicas) and the repair
scheduler's last view (which nodes are up, what their fresh inventories hold, which copies
were found corrupt). Inline files live in the replicated metadata and are always healthy.
"""

from __future__ import annotations

from typing import Callable, Iterable

from node.repair.health import Health, Replica

BAD_CHUNKS_PER_FILE_MAX = 100

ChunkReport = Callable[[bytes, list[str]], "tuple[Health, dict[str, Replica]]"]


def fsck_report(files: Iterable[tuple[str, int, list]], chunk_report: ChunkReport, pending: dict[bytes, str], *,
                files_max: int) -> dict:
    """{"files": [...], "totals": {...}, "truncated": bool}."""
    assert files_max >= 1
    entries = []
    file_totals = {health.label: 0 for health in Health}
    chunk_states: dict[bytes, Health] = {}
    truncated = False
    for path, size, chunks in files:
        if len(entries) == files_max:
            truncated = True
            break
        worst = Health.HEALTHY
        bad_chunks = []
        live_min = None
        for chunk_id, _size, recorded in chunks:
            health, states = chunk_report(chunk_id, recorded)
            chunk_states[chunk_id] = health
            live = sorted(node for node, state in states.items() if state is Replica.LIVE)
            live_min = len(live) if live_min is None else min(live_min, len(live))
            worst = max(worst, health)
            if health is not Health.HEALTHY and len(bad_chunks) < BAD_CHUNKS_PER_FILE_MAX:
                bad_chunks.append({
                    "id": chunk_id.hex(), "state": health.label, "live": live,
                    "not_live": {node: state.value for node, state in sorted(states.items()) if state is not Replica.LIVE},
                    "pending": pending.get(chunk_id),
                })
        file_totals[worst.label] += 1
        entries.append({"path": path, "size": size, "state": worst.label, "chunks": len(chunks),
                        "live_copies_min": live_min, "bad_chunks": bad_chunks})
    chunk_totals = {health.label: 0 for health in Health}
    for health in chunk_states.values():
        chunk_totals[health.label] += 1
    return {"files": entries, "totals": {"files": len(entries), **file_totals},
            "chunk_totals": {"chunks": len(chunk_states), **chunk_totals}, "truncated": truncated}

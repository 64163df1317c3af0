"""Self-healing data: the leader keeps every chunk at `replication` live copies.

  health.py     pure: the state of each recorded replica (live, down, dead, removed, missing)
                and of each chunk (healthy, under-replicated, corrupt, missing)
  planner.py    pure: what to do next (fix records, copy fewest-live-first, drop surplus,
                move for balance), placement by spread and used bytes
  throttle.py   the byte-rate bound shared by every copy
  peers.py      the leader's blocking calls to chunk ports (inventory, fetch-from, delete)
  scheduler.py  RepairScheduler: driven from the server's housekeeping on the driver thread;
                a worker thread gathers state, plans and copies; decisions go through Raft
                (add_replica / drop_replica) and are recorded only once a copy is durable

Order of every change, so no chunk ever has fewer live copies than before a step: a copy is
made and verified at its target, then recorded (add_replica); a surplus or moved copy is
forgotten (drop_replica, committed and applied on its node) and only then deleted.
"""

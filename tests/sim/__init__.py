"""Seeded, deterministic fault simulator for the Raft core (node/raft).

One integer seed fixes everything: the cluster shape, the faults, the message timings and the
random sources handed to every RaftNode. Invariants are checked after every event.
Entry points: `bin/sim` (run.py), `cluster.Cluster` for scripted scenarios.
"""

"""The pure Raft consensus core: no sockets, clocks, threads or global randomness.

The driver feeds `RaftNode` ticks and messages and carries out each `Ready` it hands back.
"""

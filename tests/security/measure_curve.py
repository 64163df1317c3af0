"""What CurveZMQ costs on this machine: a DEALER in this process sends requests of a given size
to a ROUTER in a child process, which answers each with a 2-byte reply (as a chunk put is
answered); each case runs with security off (no mechanism), plain-text and CurveZMQ.

    .venv/bin/python -m tests.security.measure_curve [--seconds 3]

Not a test (nothing is asserted); the numbers go into the notes. The pair is set up exactly as
the node does it (ServerSecurity / ClientSecurity on a keys directory), so it measures the
encryption and the per-message User-Id lookup, not a different configuration.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from node.security import KIND_CLIENT, ClientSecurity, ServerSecurity
from tests.security.conftest import make_keys

WINDOW_MESSAGES = {100: 256, 4 << 20: 4}  # outstanding requests per message size
CASES = ((100, "100 B"), (4 << 20, "4 MiB"))


def serve(keys_dir: str, mode: str) -> None:
    """Child: bind, print the port, echo until stdin closes."""
    logging.basicConfig(level=logging.ERROR)  # the plain-text warning is expected here
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    security = None
    if mode != "off":
        security = ServerSecurity(context, keys_dir, "n1", mode=mode)
        security.configure_router(router, "client")
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(sys.stdin, zmq.POLLIN)
    while True:
        events = dict(poller.poll())
        if sys.stdin.fileno() in events:
            break
        while True:
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if security is not None and security.principal_of(frames[1]) is None:
                continue  # as a node would: drop what no key vouches for
            router.send_multipart([frames[0], b"ok"], copy=False)
    router.close(linger=0)
    if security is not None:
        security.close()
    context.term()


def measure(keys_dir: str, mode: str, size_bytes: int, seconds: float, *, replicas: int = 1,
            io_threads: int = 1, window: int | None = None) -> tuple[float, float]:
    """(requests/s, payload MB/s) sending each request to `replicas` ROUTERs (separate child
    processes), as a chunk put sends one chunk to every replica."""
    children = [subprocess.Popen([sys.executable, "-m", "tests.security.measure_curve", "--serve", keys_dir, mode],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(replicas)]
    try:
        ports = [int(child.stdout.readline()) for child in children]
        context = zmq.Context(io_threads=io_threads)
        dealers = []
        for port in ports:
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            if mode != "off":
                ClientSecurity(keys_dir, KIND_CLIENT, "admin", mode=mode).configure_dealer(dealer, "n1")
            dealer.connect(f"tcp://127.0.0.1:{port}")
            dealer.send(b"x")  # the handshake is not part of the measurement
            dealer.recv(copy=False)
            dealers.append(dealer)
        payload = zmq.Frame(b"x" * size_bytes)
        window = window or WINDOW_MESSAGES[size_bytes]
        done = outstanding = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline or outstanding:
            while outstanding < window and time.perf_counter() < deadline:
                for dealer in dealers:
                    dealer.send(payload, copy=False)
                outstanding += 1
            for dealer in dealers:
                dealer.recv(copy=False)
            outstanding -= 1
            done += 1
        elapsed = time.perf_counter() - started
        for dealer in dealers:
            dealer.close(linger=0)
        context.term()
        return done / elapsed, done * size_bytes / elapsed / 1e6
    finally:
        for child in children:
            child.stdin.close()
            child.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--serve", nargs=2, metavar=("KEYS_DIR", "MODE"))
    arguments = parser.parse_args()
    if arguments.serve:
        serve(*arguments.serve)
        return
    with tempfile.TemporaryDirectory() as temporary:
        keys_dir = str(Path(temporary) / "keys")
        make_keys(Path(keys_dir), nodes=("n1",), clients=(("admin", "admin"),))
        print(f"{'size':>6} {'mode':>9} {'messages/s':>11} {'MB/s':>8}")
        for size_bytes, label in CASES:
            results = {}
            for mode in ("off", "plaintext", "curve"):
                results[mode] = measure(keys_dir, mode, size_bytes, arguments.seconds)
                rate, megabytes = results[mode]
                cost = 1 - rate / results["off"][0]
                print(f"{label:>6} {mode:>9} {rate:11.0f} {megabytes:8.1f}  cost vs off {cost:+.0%}", flush=True)
        off = measure(keys_dir, "off", 100, arguments.seconds, window=1)[0]
        curve = measure(keys_dir, "curve", 100, arguments.seconds, window=1)[0]
        print(f"100 B one at a time (round trips/s): off {off:.0f}  curve {curve:.0f}  cost {1 - curve / off:+.0%}")
        print("4 MiB to 3 replicas at once (a chunk put), payload MB/s as the client sees it:")
        for io_threads in (1, 2):
            off = measure(keys_dir, "off", 4 << 20, arguments.seconds, replicas=3, io_threads=io_threads)[1]
            curve = measure(keys_dir, "curve", 4 << 20, arguments.seconds, replicas=3, io_threads=io_threads)[1]
            print(f"  io_threads={io_threads}: off {off:7.1f}  curve {curve:7.1f}  cost {1 - curve / off:+.0%}", flush=True)


if __name__ == "__main__":
    main()

"""The lab's own housekeeping: what a killed run left behind is swept, a live run's is not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sandctl.netlab import NetLab, sweep_stale_labs

pytestmark = pytest.mark.e2e


def test_namespaces_of_a_dead_run_are_swept_and_a_live_run_keeps_its_own():
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stale = f"ss{dead_pid}-1-h1"
    live = f"ss{os.getpid()}-999-h1"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "netns", "add", live], check=True)
    try:
        assert stale in sweep_stale_labs()
        names = os.listdir("/run/netns")
        assert stale not in names and live in names
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_a_lab_removes_everything_it_made():
    with NetLab(["a", "b"]) as lab:
        made = [lab.namespace(host) for host in ("hub", "a", "b")]
        assert set(made) <= set(os.listdir("/run/netns"))
        lab.spawn("a", [sys.executable, "-c", "import time; time.sleep(600)"])
    assert not set(made) & set(os.listdir("/run/netns"))

"""The bench's CPU accounting reads the kernel's figures for a process and its descendants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from svoe.bench import proc

# A parent that starts a child burning CPU, waits for it, then burns some itself.
_BURN = "import time\nt=time.process_time()\nwhile time.process_time()-t<{s}: pass\n"
_PARENT = (
    "import subprocess, sys\n"
    f"subprocess.run([sys.executable, '-c', {_BURN.format(s=0.4)!r}], check=True)\n" + _BURN.format(s=0.2)
)


def test_wait_counts_the_waited_for_descendants() -> None:
    p = subprocess.Popen([sys.executable, "-c", _PARENT])
    cpu = proc.wait_cpu_seconds(p, timeout=30)
    assert p.returncode == 0
    assert cpu >= 0.55  # 0.4 s in the child plus 0.2 s in the parent, less clock-tick rounding


def test_tree_of_a_live_process_includes_its_busy_child() -> None:
    # The parent sleeps while its child burns CPU and then sleeps too: the tree holds the child's.
    child = _BURN.format(s=0.5) + "time.sleep(30)\n"
    parent = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(30)\n"
    p = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while proc.tree_cpu_seconds(p.pid) - proc.cpu_seconds(p.pid) < 0.45:
            assert time.monotonic() < deadline, "the child's CPU never showed in the tree"
            time.sleep(0.1)
        assert len(proc.children(p.pid)) == 1
        assert proc.cpu_seconds(p.pid) < 0.3
        assert proc.rss_kb(p.pid) > 0
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert proc.cpu_seconds(p.pid) == 0.0  # reaped: nothing left to read


def test_pod_parts_put_the_aggregators_children_under_the_block_writer() -> None:
    child = _BURN.format(s=0.5) + "time.sleep(30)\n"
    parent = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(30)\n"
    agg = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while (parts := proc.pod_parts(idle.pid, agg.pid, idle.pid))["block_writer"] < 0.45:
            assert time.monotonic() < deadline, "the aggregator's child never showed as the block writer"
            time.sleep(0.1)
        assert parts["aggregator"] < 0.3 and parts["collector"] < 0.3 and parts["redis"] < 0.3
    finally:
        os.killpg(agg.pid, signal.SIGKILL)
        idle.kill()
        agg.wait()
        idle.wait()

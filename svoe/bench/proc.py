"""CPU seconds of benchmark processes, read from the kernel rather than from the processes.

A live process is read from /proc (its own time plus that of its live children, such as the
aggregator's block writer); a finished one from the rusage that `wait4` returns, which includes
every descendant it waited for, so work done while draining at shutdown is counted too.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system seconds of one live process (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """A live process and all its live descendants."""
    return cpu_seconds(pid) + sum(tree_cpu_seconds(c) for c in children(pid))


def pod_parts(collector: int, aggregator: int, redis: int) -> dict[str, float]:
    """CPU seconds of each live process of a pod; the block writer is the aggregator's children."""
    return {
        "collector": cpu_seconds(collector),
        "aggregator": cpu_seconds(aggregator),
        "block_writer": sum(tree_cpu_seconds(c) for c in children(aggregator)),
        "redis": cpu_seconds(redis),
    }


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_cpu_seconds(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait for a child to exit; return the CPU seconds of it and its waited-for descendants."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.02)

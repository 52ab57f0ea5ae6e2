"""Running a lake job's per-partition tasks: on a local process pool, or on a Dask cluster.

    results = run_tasks(compact_partition, tasks, scheduler="tcp://dask:8786", label="compacting")

A task is a picklable argument to a top-level function, and its result is a picklable value with
a `rows` attribute (how many rows the task went through). Results come back in the order of the
tasks whatever order they finish in, so a job gives the same output on one process, on a pool and
on a cluster. The terminal shows partitions done, rows and the time left (rich, on stderr).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol


class HasRows(Protocol):
    @property
    def rows(self) -> int: ...


class JobError(RuntimeError):
    """The cluster or pool could not run the job (not bad input: that is LakeError)."""


def _completed_locally[T, R](fn: Callable[[T], R], tasks: Sequence[T], workers: int) -> Iterator[tuple[int, R]]:
    if workers <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            yield i, fn(task)
        return
    # spawn, not fork: the parent may hold DuckDB and S3 client threads that a fork would copy half-way.
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
        for fut in cf.as_completed(futures):
            try:
                result = fut.result()
            except cf.process.BrokenProcessPool:
                raise JobError(
                    "a worker process died (out of memory?): run with fewer --workers; what finished is kept"
                ) from None
            yield futures[fut], result


def _completed_on_dask[T, R](fn: Callable[[T], R], tasks: Sequence[T], address: str) -> Iterator[tuple[int, R]]:
    try:
        from distributed import Client, as_completed
        from distributed.scheduler import KilledWorker
    except ImportError as err:  # pragma: no cover - a dependency of svoe
        raise JobError(f"--scheduler needs dask.distributed: {err}") from None
    try:
        # Dask's own connect timeout (distributed.comm.timeouts.connect, 30 s unless configured).
        client = Client(address)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as err:
        raise JobError(f"cannot reach the Dask scheduler at {address}: {err}") from None
    try:
        # pure=False: a retried task re-reads the lake rather than reusing a cached result.
        futures = client.map(fn, list(tasks), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):  # type: ignore[no-untyped-call]
            try:
                result = fut.result()
            except KilledWorker as err:
                raise JobError(f"Dask lost the workers of a task (out of memory?): {err}") from None
            yield index[fut.key], result
    finally:
        client.close()  # type: ignore[no-untyped-call]


def default_workers() -> int:
    """CPUs this process may use (in a container, pass --workers: its CPU limit is not visible here)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def run_tasks[T, R: HasRows](
    fn: Callable[[T], R],
    tasks: Sequence[T],
    *,
    label: str,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> list[R]:
    """Run `fn` on every task and return the results in task order. With `scheduler` (a Dask
    scheduler address) the tasks run on that cluster; otherwise on `workers` local processes
    (default: one per CPU; 1 runs them in this process)."""
    completed = (
        _completed_on_dask(fn, tasks, scheduler)
        if scheduler
        else _completed_locally(fn, tasks, default_workers() if workers is None else workers)
    )
    results: list[Any] = [None] * len(tasks)
    show = sys.stderr.isatty() if progress is None else progress
    started = time.monotonic()
    rows = 0
    if not show:
        for i, result in completed:
            results[i] = result
            rows += result.rows
    else:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("partitions  {task.fields[rows]:,} rows"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            job = bar.add_task(label, total=len(tasks), rows=0)
            for i, result in completed:
                results[i] = result
                rows += result.rows
                bar.update(job, advance=1, rows=rows)
    if progress is not False and not show:
        took = time.monotonic() - started
        print(f"{label}: {len(tasks)} partitions, {rows:,} rows in {took:.1f} s", file=sys.stderr)
    return results

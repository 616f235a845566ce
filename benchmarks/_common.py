"""Helpers shared by the benchmark scripts (not a benchmark itself).

The benchmarks run the stack of the end-to-end tests (tests/stack.py): each its own PostgreSQL database,
named ``bench_...`` and dropped (WITH (FORCE)) on exit, and Redis database 3 (or ``BENCH_REDIS_DB``),
flushed when a stack starts (the end-to-end tests use database 2).
"""

from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.stack import REDIS, Stack  # noqa: E402

REDIS_URL = f"{REDIS}/{int(os.environ.get('BENCH_REDIS_DB', '3'))}"  # another db keeps concurrent runs apart


def bench_stack(name: str, redis_url: str = REDIS_URL, **env: str | None) -> Stack:
    """A stack (to enter) on a database ``<name>_...``, with a temporary directory of its own for its logs."""
    # Every subscriber connects from loopback: no cap on one address's WebSocket connections.
    return Stack(Path(tempfile.mkdtemp(prefix=f"{name}-")), redis_url, name,
                 **{"WS_CONNECTIONS_PER_ADDRESS": "0", **env})


def machine() -> str:
    load = os.getloadavg()
    return (f"nproc={os.cpu_count()}, Python {platform.python_version()}, {platform.system()} {platform.release()}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (also readable on a terminal)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc_info):
        self.seconds = time.perf_counter() - self.start


class PhaseTimer:
    """Real (not cProfile) time per phase: each outermost ORM call by model and method, plus named
    functions; and the time inside cursor.execute per phase. Installed by wrapping those functions in
    this process only (a few microseconds per wrapped call); removed on exit."""

    OUTSIDE = "(outside wrapped calls)"

    def __init__(self, extra: list[tuple[object, str, str]], orm: bool = True):
        self.extra, self.orm = extra, orm
        self.phases: dict[str, float] = {}
        self.sql: dict[str, list] = {}  # phase -> [seconds inside cursor.execute, statements, characters]
        self.depth, self.current, self.saved = 0, self.OUTSIDE, []

    def wrap(self, owner, name, label):
        original = getattr(owner, name)
        self.saved.append((owner, name, original))
        timer = self

        def wrapper(*args, **kwargs):
            if timer.depth:
                return original(*args, **kwargs)
            key = label(args)
            timer.depth += 1
            timer.current = key
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.depth -= 1
                timer.current = timer.OUTSIDE
                timer.phases[key] = timer.phases.get(key, 0.0) + time.perf_counter() - start

        setattr(owner, name, wrapper)

    def sql_wrapper(self, execute, sql_text, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql_text, params, many, context)
        finally:
            entry = self.sql.setdefault(self.current, [0.0, 0, 0])
            entry[0] += time.perf_counter() - start
            entry[1] += 1
            entry[2] += len(sql_text)

    def __enter__(self):
        from django.db import connection
        from django.db.models.query import QuerySet

        for method in ("bulk_create", "bulk_update", "update", "delete", "in_bulk", "get", "get_or_create",
                       "_fetch_all", "first", "count", "create") if self.orm else ():
            self.wrap(QuerySet, method, lambda args, method=method: f"ORM {args[0].model.__name__}.{method.strip('_')}")
        for owner, name, label in self.extra:
            self.wrap(owner, name, lambda args, label=label: label)
        if self.orm:
            self.wrap(connection, "commit", lambda args: "COMMIT")
        self.sql_context = connection.execute_wrapper(self.sql_wrapper)
        self.sql_context.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.sql_context.__exit__(*exc_info)
        for owner, name, original in reversed(self.saved):
            if owner.__class__.__name__ == "DatabaseWrapper":
                delattr(owner, name)  # an instance attribute shadowing the class's method
            else:
                setattr(owner, name, original)


def print_phases(phases: dict) -> None:
    """A PhaseTimer result: {"title", "seconds", "phases", "sql"}, as a table."""
    accounted = sum(phases["phases"].values())
    print(phases["title"] + " (real time per phase, wrapped calls, no profiler)")
    phase_rows = []
    for name, sec in sorted(phases["phases"].items(), key=lambda item: -item[1]):
        if sec <= 0.001:
            continue
        in_sql, statements, chars = phases["sql"].get(name, [0.0, 0, 0])
        phase_rows.append([name, f"{sec:.3f}", f"{sec / phases['seconds']:.0%}", f"{in_sql:.3f}", statements,
                           f"{chars / max(statements, 1) / 1000:,.1f}"])
    rest = phases["sql"].get(PhaseTimer.OUTSIDE, [0.0, 0, 0])
    phase_rows.append(["everything else (Python outside the wrapped calls)", f"{phases['seconds'] - accounted:.3f}",
                       f"{(phases['seconds'] - accounted) / phases['seconds']:.0%}", f"{rest[0]:.3f}", rest[1],
                       f"{rest[2] / max(rest[1], 1) / 1000:,.1f}"])
    print(table(["phase", "seconds", "share", "of which in cursor.execute", "statements", "kB SQL each"],
                phase_rows))


# -- CPU accounting from /proc (no psutil in the venv)

CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcessCpu(NamedTuple):
    comm: str
    cmdline: str
    cpu: float  # seconds, user + system
    start: int  # clock ticks after boot: tells a reused pid apart
    group: int  # session id: a process started in a session of its own, with all it starts (supervisord's programs too)
    system: float  # seconds of ``cpu`` in the kernel


def proc_cpu() -> dict[int, ProcessCpu]:
    """pid -> ProcessCpu for every readable process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry)] = ProcessCpu(comm, cmdline, (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[19]),
                                     int(fields[3]), int(fields[12]) / CLK_TCK)
    return out


def machine_cpu() -> tuple[float, float]:
    """(all CPU seconds, idle CPU seconds) of the machine since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) / CLK_TCK, idle / CLK_TCK


class CpuSampler:
    """CPU used between start() and stop(), grouped by a classifier over (pid, comm, cmdline).

    /proc is read every ``interval`` seconds on a daemon thread, so a process that exits in between
    loses at most its last interval; the machine total (from /proc/stat) also counts the kernel."""

    def __init__(self, classify, interval: float = 1.0):
        self.classify, self.interval = classify, interval
        self.groups: dict[str, float] = {}
        self.per_pid: dict[int, tuple[str, str, float]] = {}  # pid -> (label, group, cpu seconds in the window)

    def _tick(self) -> None:
        now = proc_cpu()
        for pid, (comm, cmdline, cpu, started, _, _) in now.items():
            previous = self.last.get(pid)
            # a pid not seen at the previous sample (or reused: another start time) started since
            used = cpu if previous is None or previous[3] != started else cpu - previous[2]
            if used <= 0:
                continue
            known = self.per_pid.get(pid)
            if known is not None and (previous is None or previous[3] == started):
                label, group, total = known  # classified once: an exiting process loses its cmdline
            else:
                label, group, total = (cmdline or comm)[:100], self.classify(pid, comm, cmdline), 0.0
            self.groups[group] = self.groups.get(group, 0.0) + used
            self.per_pid[pid] = (label, group, total + used)
        self.last = now

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            self._tick()

    def start(self):
        import threading

        self.last = proc_cpu()
        self.total_before = machine_cpu()
        self.t0 = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> dict[str, float]:
        self.stopping.set()
        self.thread.join()
        self._tick()
        total_after = machine_cpu()
        wall = time.monotonic() - self.t0
        busy = (total_after[0] - self.total_before[0]) - (total_after[1] - self.total_before[1])
        result = {group: used / wall for group, used in self.groups.items()}
        result["(machine total)"] = busy / wall
        result["(unattributed: kernel, processes gone between samples)"] = max(
            0.0, busy / wall - sum(self.groups.values()) / wall)
        self.others = sorted(
            ((used / wall, label) for label, group, used in self.per_pid.values()
             if group.startswith("other") and used / wall >= 0.005),
            reverse=True)
        return result


def print_cpu_report(cpu: dict[str, float], sampler, started: float, what: str = "") -> None:
    """The closing lines of a benchmark: cores busy per process group, the busiest others, run time."""
    print(f"CPU over the run (cores busy on average{what}): "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])))
    if sampler.others:
        print("  busiest other processes: " + "; ".join(f"{v:.2f} {c[:80]}" for v, c in sampler.others[:3]))
    print(f"total run time {time.perf_counter() - started:.0f} s")

"""Daphne's CPU per delivered public message: one Daphne process, 1,000 subscribers, synthetic book deltas.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):

    .venv/bin/python benchmarks/ws_relay_cpu.py                     # 8 and 20 deltas/s, 10 s each
    .venv/bin/python benchmarks/ws_relay_cpu.py --rates 20 --subscribers 1000 --procs 4

No matcher and no REST: a fresh database (for the subscribers' snapshots), ONE Daphne process through
bin/start-websocket, --procs subscriber processes of ws_fanout.py (its lean client, heaps frozen once
connected), and the injector of ws_fanout.py sending synthetic deltas with channels_redis group_send at
each rate for --seconds. The figure is Daphne's CPU time (utime + stime from /proc) over the step, divided
by the messages the subscribers received in it (and the part of it in the kernel, stime: on loopback the
sender's send() also runs the receiver's TCP input and wakes it); the machine is shared, so CPU time, not
wall time.
First, Daphne's CPU with the subscribers connected and nothing sent for --idle-seconds (its fixed upkeep,
heartbeats to quiet connections included).
Redis database $BENCH_WS_REDIS_DB (default 11) is flushed before and after. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_stack, machine_cpu, proc_cpu, table  # noqa: E402
from tests.processes import stop  # noqa: E402
from ws_fanout import REDIS_URL, SCRIPT  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="8,20", help="synthetic deltas/s, one step each")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4, help="subscriber processes")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="Daphne's CPU with nothing sent, first")
    parser.add_argument("--tick-ms", default="0",
                        help="the subscribers' tick (ws_fanout.py --tick-ms; default 0: woken by each frame)")
    args = parser.parse_args()

    load = os.getloadavg()
    with bench_stack("bench_wscpu", REDIS_URL, PYTHONPATH=str(Path(SCRIPT).parent.parent)) as stack:
        url = stack.start_daphne(1).replace("http://", "ws://") + "/v1/ws"
        daphne = next(process for name, process in stack.started if name.startswith("daphne"))
        outs, subscribers = [], []
        per = [args.subscribers // args.procs + (1 if i < args.subscribers % args.procs else 0)
               for i in range(args.procs)]
        for i, n in enumerate(per):
            out = str(stack.tmp / f"sub-{i}")
            outs.append(out)
            subscribers.append(stack.start(f"sub-{i}", [sys.executable, str(SCRIPT), "--role", "subscriber",
                                                        "--url", url, "--connections", str(n), "--out", out,
                                                        "--tick-ms", args.tick_ms]))
        deadline = time.monotonic() + 120
        while not all(Path(o + ".ready").exists() for o in outs):
            if time.monotonic() > deadline:
                raise TimeoutError("subscribers not ready")
            time.sleep(0.2)
        subscribed = sum(json.loads(Path(o + ".ready").read_text())["subscribed"] for o in outs)
        time.sleep(2)

        def daphne_cpu() -> float:  # the launcher's session: supervisord and its Daphne process
            return sum(process.cpu for process in proc_cpu().values() if process.group == daphne.pid)

        idle0, idle_t0 = daphne_cpu(), time.monotonic()
        time.sleep(args.idle_seconds)
        idle = (daphne_cpu() - idle0) / (time.monotonic() - idle_t0)
        machine0 = machine_cpu()
        injector = stack.start("injector", [sys.executable, str(SCRIPT), "--role", "injector", "--rates", args.rates,
                                            "--step-seconds", str(args.seconds), "--start-seq", "0",
                                            "--daphne-group", str(daphne.pid), "--out", str(stack.tmp / "inj.json")])
        injector.wait(timeout=600)
        machine1 = machine_cpu()
        time.sleep(3)
        for process in subscribers:
            stop(process, timeout=30)
        injected = json.loads((stack.tmp / "inj.json").read_text())
        seqs = array("q")
        for out in outs:
            data = Path(out + ".bin").read_bytes()
            seqs.frombytes(data[:len(data) // 2])
        sent_at = dict(injected["sent"])
        rows = []
        for step in injected["steps"]:
            in_step = {seq for seq, at in injected["sent"] if step["w0"] <= at <= step["w1"]}
            delivered = sum(1 for seq in seqs if seq in in_step)
            wall = (step["w1"] - step["w0"]) / 1e9
            per_message = wall / max(delivered, 1) * 1e6
            rows.append([f"{step['rate']:g}", step["sent"], delivered, f"{step['daphne_cores']:.3f}",
                         f"{step['daphne_cores'] * per_message:.1f}", f"{step['daphne_system_cores'] * per_message:.1f}"])
        busy = ((machine1[0] - machine0[0]) - (machine1[1] - machine0[1])) / max(machine1[0] - machine0[0], 1e-9)
        print(f"subscribers' tick {args.tick_ms} ms; {subscribed}/{args.subscribers} subscribed, {len(sent_at)} deltas "
              f"sent; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; machine {busy * 2:.2f} of 2 "
              f"cores busy; Daphne idle (connected, nothing sent) {idle * 1000:.1f} ms of CPU a second")
        print(table(["deltas/s", "sent", "delivered", "Daphne cores", "Daphne us a message", "of which in the kernel"],
                    rows))


if __name__ == "__main__":
    main()

"""make production under supervisord: kill -9 of one matcher, one Daphne process and one gunicorn worker
while signed orders stream in. The others keep serving, each killed process is back, nothing is lost."""

import os
import signal
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hkt_client import Client
from websockets.sync.client import connect

from .processes import wait_until
from .stack import OrderStream
from .test_e2e_matching import iterate_orders

pytestmark = pytest.mark.slow
LIVE_OR_FINAL = {"open", "partially_filled", "filled", "cancelled", "expired", "rejected"}


def children(pid: int) -> set[int]:
    tasks = Path(f"/proc/{pid}/task")
    return {int(child) for task in tasks.iterdir() for child in (task / "children").read_text().split()}


def descendants(pid: int) -> set[int]:
    found = children(pid)
    for child in set(found):
        found |= descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def websocket_pong(url: str) -> str:
    with connect(url, open_timeout=10) as ws:
        ws.send('{"op": "ping"}')
        return ws.recv(timeout=10)


def back(production, program: str, killed: int) -> int | None:
    """The program's new pid once supervisord has it running again."""
    state, pid = production.states()[program]
    return pid if state == "RUNNING" and pid != killed else None


def test_kill_9_of_a_matcher_a_daphne_process_and_a_gunicorn_worker_under_load(stack):
    production = stack.start_production(workers=2, ws_processes=2)
    bots = [Client(production.rest, k["key"], k["secret"]) for k in
            (stack.create_trader(f"loaded{i}", "USD=1000000", "BTC=100") for i in range(2))]
    with OrderStream(bots, "BTC-USD", mid=Decimal(63000), size_step=Decimal("0.001")) as orders:
        orders.wait_for(20)
        states = production.states()
        matcher, daphne, gunicorn = (states[name][1] for name in
                                     ("matchers:matcher-BTC-USD", "websocket:daphne-0", "gunicorn"))
        worker = min(children(gunicorn))
        for pid in (matcher, daphne, worker):
            os.kill(pid, signal.SIGKILL)
        # Until a killed Daphne has exited, the kernel may still queue a new connection on its socket
        # (the two share the port), to be reset when it goes: the survivors are asked once it is gone.
        assert wait_until(lambda: not alive(daphne), timeout=10)

        # The survivors answer while the killed ones come back.
        assert httpx.get(f"{production.rest}/v1/time", timeout=10).status_code == 200
        assert websocket_pong(production.websocket) == '{"type": "pong"}'
        assert wait_until(lambda: back(production, "matchers:matcher-BTC-USD", matcher), timeout=60)
        assert wait_until(lambda: back(production, "websocket:daphne-0", daphne), timeout=60)
        assert wait_until(lambda: len(children(gunicorn) - {worker}) == 2, timeout=60)
        assert production.states()["gunicorn"][1] == gunicorn  # the master restarted its worker itself

        orders.wait_for(len(orders.accepted) + 20)

    assert orders.failures == []
    assert production.all_running()
    assert [websocket_pong(production.websocket) for _ in range(4)] == ['{"type": "pong"}'] * 4
    report = wait_until(lambda: (r := stack.audit())["pending_commands"] == 0 and r, timeout=90, interval=1)
    assert report["problems"] == []
    for index, bot in enumerate(bots):
        listed = {order["order_id"]: order["status"] for order in iterate_orders(bot, "BTC-USD")}
        assert set(listed) == orders.order_ids_of(index)  # every accepted order exists, once
        assert set(listed.values()) <= LIVE_OR_FINAL  # none left pending once the matcher was back


def test_the_one_stop_command_leaves_no_process_behind(stack):
    production = stack.start_production(workers=2, ws_processes=2)
    supervisord = production.process.pid
    processes = descendants(supervisord)
    states = production.states()

    assert production.stop() == 0

    # gunicorn, two Daphne processes, the three markets' matchers, and beat, the worker of periodic jobs and the
    # dead-man's switch watcher
    assert len(states) == 1 + 2 + 3 + 3
    assert {pid for _, pid in states.values()} <= processes
    assert len(processes) >= len(states) + 2  # and gunicorn's two workers
    assert [pid for pid in processes | {supervisord} if alive(pid)] == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{production.rest}/v1/time", timeout=5)

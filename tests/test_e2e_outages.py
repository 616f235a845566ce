"""The production topology while its database connections are cut under a stream of orders: no
answer is a 500, and every order that exists was answered with its id (201/200, or 503 naming it)."""

import json
import threading
import time

import httpx
import psycopg
import pytest
from hkt_client.signing import signed_headers

from .stack import POSTGRES, Stack

pytestmark = pytest.mark.slow

CUT_SECONDS = 4.0
ORDERS_PER_BOT = 60


def cut_connections(database: str, stop: threading.Event) -> int:
    """Terminate every connection to the stack's database, again and again, until ``stop``."""
    cuts = 0
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        while not stop.is_set():
            cuts += len(admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE datname = %s AND pid <> pg_backend_pid()", [database]).fetchall())
            time.sleep(0.02)
    return cuts


def test_cutting_database_connections_under_load_never_answers_500_and_names_every_order(tmp_path):
    with Stack(tmp_path) as stack:
        rest = stack.start_rest()
        stack.start_matcher("BTC-USD")
        bots = [stack.create_trader(f"cut{i}", "USD=1000000", "BTC=100") for i in range(4)]
        answers: dict[str, tuple[int, dict, str | None]] = {}  # client_order_id -> (status, body, Retry-After)
        lock = threading.Lock()
        some_placed = threading.Event()

        def place(bot: dict, index: int):
            with httpx.Client(base_url=rest, timeout=30) as http:
                for n in range(ORDERS_PER_BOT):
                    client_order_id = f"c{index}-{n}"
                    side = "buy" if (n + index) % 2 else "sell"
                    price = 63000 + (n % 7 - 3) * 10  # both sides around one price: many orders trade
                    body = json.dumps({"pair": "BTC-USD", "side": side, "type": "limit", "price": str(price),
                                       "size": "0.01", "client_order_id": client_order_id}).encode()
                    headers = {"Content-Type": "application/json",
                               **signed_headers(bot["key"], bot["secret"], "POST", "/v1/orders", body)}
                    response = http.post("/v1/orders", content=body, headers=headers)
                    answer = response.json() if response.headers.get("content-type") == "application/json" else {}
                    with lock:
                        answers[client_order_id] = (response.status_code, answer, response.headers.get("Retry-After"))
                        if len(answers) >= 40:
                            some_placed.set()
                    time.sleep(0.02)

        threads = [threading.Thread(target=place, args=(bot, i)) for i, bot in enumerate(bots)]
        for thread in threads:
            thread.start()
        stop_cutting = threading.Event()
        assert some_placed.wait(timeout=120)
        cutter = threading.Timer(CUT_SECONDS, stop_cutting.set)
        cutter.start()
        cuts = cut_connections(stack.database, stop_cutting)
        for thread in threads:
            thread.join(timeout=300)

        statuses = [status for status, _, _ in answers.values()]
        assert len(answers) == 4 * ORDERS_PER_BOT
        assert cuts > 0 and statuses.count(503) > 0  # the cut happened while orders flowed
        assert set(statuses) <= {200, 201, 503}, sorted(set(statuses))  # no 500, nor anything else

        report = wait_for_matcher(stack)
        assert report["problems"] == [] and report["pending_commands"] == 0
        with psycopg.connect(f"{POSTGRES}/{stack.database}") as conn:
            orders = dict(conn.execute("SELECT client_order_id, id FROM trading_order").fetchall())
            statuses_in_db = {row[0] for row in conn.execute("SELECT DISTINCT status FROM trading_order")}

        for client_order_id, (status, body, retry_after) in answers.items():
            if status in (200, 201):
                assert orders.get(client_order_id) == body["order_id"], (client_order_id, body)
            else:
                assert body["error"]["code"] == "SERVICE_UNAVAILABLE" and retry_after is not None, body
                named = body["error"]["details"].get("order_id")
                if named is None:
                    assert client_order_id not in orders, (client_order_id, body)  # a 503 naming nothing made nothing
                elif client_order_id in orders:
                    assert orders[client_order_id] == named
        assert set(orders) <= set(answers)
        assert "pending" not in statuses_in_db  # every order final or resting


def wait_for_matcher(stack: Stack, timeout: float = 120) -> dict:
    """The audit once the matcher has drained every queued command (its retry may be backing off)."""
    deadline = time.monotonic() + timeout
    while True:
        report = stack.audit()
        if report["pending_commands"] == 0 or time.monotonic() > deadline:
            return report
        time.sleep(1)

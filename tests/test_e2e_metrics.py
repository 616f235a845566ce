"""/metrics on the production processes (PostgreSQL, Redis, gunicorn with two workers, a Celery matcher, Daphne),
all writing to one multiprocess directory: after a scripted run of orders, refusals and a WebSocket subscription,
a scrape of gunicorn finds every counter moved by exactly what the run did, whichever process counted it."""

import json
import shutil
from collections import Counter
from pathlib import Path

import httpx
import pytest
from hkt_client.signing import new_nonce, now_ms, prehash, sign, signed_headers
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from .processes import wait_until
from .stack import Stack

pytestmark = pytest.mark.slow

TOKEN = "e2e-operator-" + "t" * 40
BUDGET = 20  # unsigned weight per minute per client address: the run exhausts one address's


def samples(text: str) -> dict[tuple, float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def key(name: str, **labels: str) -> tuple:
    return name, tuple(sorted(labels.items()))


def moved(before: dict, after: dict, name: str) -> dict[tuple, float]:
    """The samples of ``name`` that changed, by their labels."""
    return {labels: after[sample, labels] - before.get((sample, labels), 0) for sample, labels in after
            if sample == name and after[sample, labels] != before.get((sample, labels), 0)}


class Requests:
    """Each request on a connection of its own (so that both gunicorn workers take some), and what each answer
    was: (endpoint, method, status, code), as the metrics count them."""

    def __init__(self, base_url: str):
        self.http = httpx.Client(base_url=base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
        self.answered: Counter = Counter()

    def send(self, endpoint: str, method: str, path: str, body=None, *, trader=None, secret=None, **headers):
        content = b"" if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if content else {}
        if trader is not None:
            sent.update(signed_headers(trader["key"], secret or trader["secret"], method, path, content))
        response = self.http.request(method, path, content=content or None, headers={**sent, **headers})
        code = response.json()["error"]["code"] if response.status_code >= 400 else ""
        self.answered[endpoint, method, str(response.status_code), code] += 1
        return response

    def order(self, trader, side: str, price: str, size: str, **signing):
        return self.send("order-list", "POST", "/v1/orders", {"pair": "BTC-USD", "side": side, "type": "limit",
                                                             "price": price, "size": size}, trader=trader, **signing)

    def scrape(self, token: str = TOKEN) -> httpx.Response:
        return self.http.get("/metrics", headers={"Authorization": f"Bearer {token}"})


def worker_pids(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def requests_counted_by(pid: int, directory: Path, scratch: Path) -> float:
    """exchange_http_requests_total as one process's own file has it."""
    scratch.mkdir(exist_ok=True)
    shutil.copy(directory / f"counter_{pid}.db", scratch / f"counter_{pid}.db")
    metrics = MultiProcessCollector.merge([str(scratch / f"counter_{pid}.db")], accumulate=True)
    (scratch / f"counter_{pid}.db").unlink()
    return sum(sample.value for metric in metrics if metric.name == "exchange_http_requests"
               for sample in metric.samples if sample.name == "exchange_http_requests_total")


def ws_message(socket) -> dict:
    return json.loads(socket.recv(timeout=30))


def test_metrics_count_exactly_what_happened_across_every_process(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "METRICS_TOKEN": TOKEN, "TRUSTED_PROXIES": "127.0.0.1",
           "PUBLIC_WEIGHT_PER_MINUTE": str(BUDGET), "WS_HEARTBEAT_SECONDS": "3600"}
    with Stack(tmp_path, **env) as stack:
        stack.start_matcher("BTC-USD")
        rest = stack.start_rest(workers=2)
        master = next(process for name, process in stack.started if name.startswith("gunicorn")).pid
        ws_url = stack.start_daphne().replace("http://", "ws://") + "/v1/ws"
        alice, bob = stack.create_traders(["alice", "bob"], "USD=100000", "BTC=10")
        requests = Requests(rest)

        assert requests.http.get("/metrics").status_code == 401
        assert requests.scrape("not-the-token").status_code == 401
        before = samples(requests.scrape().text)

        with connect(ws_url) as socket:
            received = 0

            def receive() -> dict:
                nonlocal received
                received += 1
                return ws_message(socket)

            socket.send(json.dumps({"op": "subscribe", "channels": [{"name": "trades", "pair": "BTC-USD"}]}))
            assert receive()["type"] == "subscribed"
            during = samples(requests.scrape().text)
            assert during[key("exchange_ws_connections")] == before.get(key("exchange_ws_connections"), 0) + 1
            assert during[key("exchange_ws_subscriptions", channel="trades")] == 1

            # Orders: two trades, one resting order; refusals with known codes.
            assert requests.order(bob, "sell", "100", "1").status_code == 201
            assert requests.order(alice, "buy", "100", "1").json()["status"] == "filled"
            assert requests.order(alice, "buy", "90", "0.5").status_code == 201
            assert requests.order(bob, "sell", "90", "0.5").json()["status"] == "filled"
            assert requests.order(alice, "buy", "100", "100000").json()["error"]["code"] == "INSUFFICIENT_FUNDS"
            assert requests.order(bob, "sell", "100", "1", secret="x" * 64).status_code == 401
            assert requests.send("order-list", "POST", "/v1/orders", {"pair": "BTC-USD"}).status_code == 401
            assert requests.send("orderbook-detail", "GET", "/v1/orderbook/DOGE-USD").status_code == 404

            trades = []
            while len(trades) < 2:
                message = receive()
                assert message["type"] == "trade", message
                trades.append(message)
            # A refused sign-in over the socket, then a ping: its pong comes after everything sent before it.
            timestamp, nonce = str(now_ms()), new_nonce()
            socket.send(json.dumps({"op": "auth", "key": alice["key"], "timestamp": timestamp, "nonce": nonce,
                                    "signature": sign("x" * 64, prehash(timestamp, nonce, "GET", "/v1/ws"))}))
            assert receive()["code"] == "INVALID_SIGNATURE"
            socket.send(json.dumps({"op": "ping"}))
            assert receive()["type"] == "pong"

        # One address spends its budget: exactly one refusal.
        for _ in range(BUDGET + 1):
            requests.send("time", "GET", "/v1/time", **{"X-Forwarded-For": "10.7.7.7"})
        # More requests, each from an address of its own, until both workers have answered some.
        workers = worker_pids(master)
        assert len(workers) == 2
        for n in range(500):
            if all(requests_counted_by(pid, directory, tmp_path / "scratch") for pid in workers):
                break
            requests.send("time", "GET", "/v1/time", **{"X-Forwarded-For": f"10.8.{n // 250}.{n % 250}"})

        wait_until(lambda: samples(requests.scrape().text).get(key("exchange_ws_connections")) == 0,
                   what="the socket's close counted")
        after = samples(requests.scrape().text)

    per_worker = [requests_counted_by(pid, directory, tmp_path / "scratch") for pid in workers]
    assert all(per_worker)
    assert requests.answered[("time", "GET", "429", "RATE_LIMITED")] == 1
    assert moved(before, after, "exchange_http_requests_total") == {
        tuple(sorted({"endpoint": endpoint, "method": method, "status": status, "code": code}.items())): count
        for (endpoint, method, status, code), count in requests.answered.items()}
    assert moved(before, after, "exchange_auth_refusals_total") == {
        (("code", "INVALID_SIGNATURE"), ("transport", "rest")): 1,
        (("code", "MISSING_AUTH_HEADERS"), ("transport", "rest")): 1,
        (("code", "INVALID_SIGNATURE"), ("transport", "websocket")): 1,
    }
    assert moved(before, after, "exchange_rate_limit_refusals_total") == {(("budget", "address"),): 1}
    assert moved(before, after, "exchange_trades_total") == {(("pair", "BTC-USD"),): 2}
    assert moved(before, after, "exchange_matcher_commands_total") == {(("pair", "BTC-USD"),): 4}
    assert moved(before, after, "exchange_matcher_lag_seconds_count") == {(("pair", "BTC-USD"),): 4}
    assert after[key("exchange_matcher_queue_depth", pair="BTC-USD")] == 0
    assert after[key("exchange_book_depth_levels", pair="BTC-USD", side="bid")] == 0
    assert after[key("exchange_book_depth_levels", pair="BTC-USD", side="ask")] == 0
    assert moved(before, after, "exchange_ws_messages_sent_total") == {(): received}
    assert moved(before, after, "exchange_ws_connections_opened_total") == {(): 1}
    assert after[key("exchange_ws_subscriptions", channel="trades")] == 0
    assert 1 <= moved(before, after, "exchange_ws_relay_latency_seconds_count")[()] <= 2

"""The production topology, driven as bots drive it: signed HTTP to gunicorn, a Celery matcher per pair,
PostgreSQL and Redis. The matcher is killed with SIGKILL while orders stream in."""

import time
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from hkt_client import Client
from hkt_client.errors import MarketHalted

from .processes import wait_until
from .stack import OrderStream

pytestmark = pytest.mark.slow
D = Decimal


@pytest.fixture(scope="module")
def rest(stack):
    return stack.start_rest()


def spot(balances: dict, asset: str) -> dict:
    return next(row["spot"] for row in balances["balances"] if row["asset"] == asset)


def test_two_accounts_trade_over_signed_rest_to_the_cent(stack, rest):
    stack.start_matcher("BTC-USD")
    alice_key = stack.create_trader("alice", "USD=100000", "BTC=10")
    bob_key = stack.create_trader("bob", "USD=100000", "BTC=10")
    alice = Client(rest, alice_key["key"], alice_key["secret"])
    bob = Client(rest, bob_key["key"], bob_key["secret"])

    ask = alice.place_order("BTC-USD", "sell", "limit", price="63000", size="0.5")
    wait_until(lambda: alice.get_order(ask["order_id"])["status"] == "open")
    bid = bob.place_order("BTC-USD", "buy", "limit", price="63100", size="0.2")
    bid = wait_until(lambda: (o := bob.get_order(bid["order_id"]))["status"] == "filled" and o)

    assert bid["average_fill_price"] == "63000.00" and bid["fee"] == "0.00040000"
    assert spot(bob.balances(), "USD") == {"available": "87400.00", "locked": "0.00", "total": "87400.00"}
    assert spot(bob.balances(), "BTC")["available"] == "10.19960000"
    assert spot(alice.balances(), "USD")["available"] == "112587.40"
    assert spot(alice.balances(), "BTC") == {"available": "9.50000000", "locked": "0.30000000", "total": "9.80000000"}
    assert [f["liquidity"] for f in alice.fills()["results"]] == ["maker"]
    assert stack.audit()["problems"] == []


def test_matcher_killed_mid_stream_loses_nothing_and_applies_nothing_twice(stack, rest):
    stack.start_matcher("ETH-USD")
    bots = [Client(rest, k["key"], k["secret"]) for k in
            (stack.create_trader(f"streamer{i}", "USD=1000000", "ETH=1000") for i in range(4))]
    with OrderStream(bots, "ETH-USD", mid=D(3000), size_step=D("0.01")) as orders:
        for threshold in (20, 50, 80):  # kill at points of the stream, however fast this machine is
            orders.wait_for(threshold)
            stack.kill_matcher("ETH-USD")
            time.sleep(0.5)
            stack.start_matcher("ETH-USD")
        orders.wait_for(120)

    report = wait_until(lambda: (r := stack.audit())["pending_commands"] == 0 and r, timeout=90, interval=1)
    assert report["problems"] == []
    assert orders.failures == []
    assert len(orders.accepted) >= 120
    assert len(set(orders.accepted.values())) == len(orders.accepted)
    for bot_index, bot in enumerate(bots):
        listed = {o["order_id"]: o for o in iterate_orders(bot, "ETH-USD")}
        assert set(listed) == orders.order_ids_of(bot_index)  # every accepted order exists, once
        assert "pending" not in {order["status"] for order in listed.values()}


def iterate_orders(bot: Client, pair: str):
    page = bot.list_orders(pair=pair, limit=1000)
    while True:
        yield from page["results"]
        if not page.get("next"):
            return
        cursor = parse_qs(urlparse(page["next"]).query)["cursor"][0]
        page = bot.list_orders(pair=pair, limit=1000, cursor=cursor)


SET_STATUS = ("from trading import services; from trading.models import Market; "
              "services.set_market_status(Market.objects.get(pair='ETH-BTC').pk, '%s')")


def test_a_halt_from_another_process_refuses_the_next_order_where_the_market_was_read_before(stack):
    rest = stack.start_rest(workers=1)  # one web process: the order before the halt surely read the market there
    key = stack.create_trader("halted", "ETH=10")
    bot = Client(rest, key["key"], key["secret"])
    sell = {"price": "0.09", "size": "0.1"}  # far above the book: nothing else in this module trades with it
    bot.place_order("ETH-BTC", "sell", "limit", **sell)

    stack.manage("shell", "--no-imports", "-c", SET_STATUS % "halted")
    try:
        with pytest.raises(MarketHalted):
            bot.place_order("ETH-BTC", "sell", "limit", **sell)
    finally:
        stack.manage("shell", "--no-imports", "-c", SET_STATUS % "online")
    bot.place_order("ETH-BTC", "sell", "limit", **sell)  # resumed: accepted at once too

    assert spot(bot.balances(), "ETH") == {"available": "9.80000000", "locked": "0.20000000", "total": "10.00000000"}


def test_the_production_script_starts_rest_websocket_and_a_matcher_per_market(stack, tmp_path):
    from websockets.sync.client import connect

    from .processes import free_port, running

    rest_port, ws_port = free_port(), free_port()
    env = {**stack.env, "REST_BIND": f"127.0.0.1:{rest_port}", "WS_BIND": f"127.0.0.1:{ws_port}",
           "WEB_CONCURRENCY": "2"}
    key = stack.create_trader("production", "BTC=1")
    with running(["bin/run-production"], env, tmp_path / "production.log",
                 ready_url=f"http://127.0.0.1:{rest_port}/v1/time"):
        bot = Client(f"http://127.0.0.1:{rest_port}", key["key"], key["secret"])
        order = bot.place_order("ETH-BTC", "buy", "limit", price="0.05", size="0.01")
        order = wait_until(lambda: (o := bot.get_order(order["order_id"]))["status"] != "pending" and o)
        with wait_until(lambda: try_connect(connect, f"ws://127.0.0.1:{ws_port}/v1/ws"), timeout=30) as ws:
            ws.send('{"op": "ping"}')
            pong = ws.recv(timeout=5)

    assert order["status"] == "open"  # matched by the ETH-BTC worker the script started
    assert pong == '{"type": "pong"}'
    assert "gunicorn" in (tmp_path / "production.log").read_text().lower()


def try_connect(connect, url):
    try:
        return connect(url)
    except OSError:
        return None

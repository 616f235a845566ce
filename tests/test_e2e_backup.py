"""A backup as README ("Backups") describes it: ``pg_dump -Fc`` of the live database while gunicorn and the matcher
run, restored with ``pg_restore`` into a fresh database with an empty Redis, and the exchange started on it (the
matcher first): the same books, balances and sequences, the ledger audit clean, and trading going on from there."""

import subprocess
from decimal import Decimal

import psycopg
import pytest
from hkt_client import Client

from .processes import wait_until
from .stack import POSTGRES, Stack

pytestmark = pytest.mark.slow
D = Decimal


def books_and_balances(stack: Stack, rest: str) -> dict:
    """What must come back: the public book with its sequence, each matcher's committed position, every balance,
    and the id sequences (a restored exchange must not give out an id twice)."""
    book = Client(rest).orderbook("BTC-USD")
    with psycopg.connect(f"{POSTGRES}/{stack.database}") as conn:
        return {
            "book": {side: book[side] for side in ("sequence", "bids", "asks")},
            "book_states": conn.execute(
                "SELECT m.pair, s.sequence, s.batches, s.last_priority FROM trading_bookstate s "
                "JOIN trading_market m ON m.id = s.market_id ORDER BY m.pair").fetchall(),
            "balances": conn.execute(
                "SELECT b.account_id, a.symbol, b.wallet, b.available, b.locked FROM trading_balance b "
                "JOIN trading_asset a ON a.id = b.asset_id ORDER BY b.account_id, a.symbol, b.wallet").fetchall(),
            "id_sequences": conn.execute(
                "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' "
                "AND sequencename IN ('trading_order_id_seq', 'trading_trade_id_seq', 'trading_ledgerentry_id_seq') "
                "ORDER BY sequencename").fetchall(),
        }


def filled(client: Client, order_id: int) -> dict:
    return wait_until(lambda: (o := client.get_order(order_id))["status"] == "filled" and o, timeout=30)


def test_a_dump_restored_into_a_fresh_database_comes_back_with_the_same_books_and_trades_on(stack, tmp_path):
    rest = stack.start_rest(1)
    stack.start_matcher("BTC-USD")
    keys = stack.create_traders(["alice", "bob"], "USD=100000", "BTC=10")
    alice, bob = (Client(rest, key["key"], key["secret"]) for key in keys)
    for price in ("63000", "63100", "63200"):
        alice.place_order("BTC-USD", "sell", "limit", price=price, size="0.5")
    for price in ("62800", "62900"):
        bob.place_order("BTC-USD", "buy", "limit", price=price, size="0.4")
    filled(bob, bob.place_order("BTC-USD", "buy", "limit", price="63000", size="0.2")["order_id"])
    wait_until(lambda: stack.audit()["pending_commands"] == 0, timeout=60, interval=0.5)
    before = books_and_balances(stack, rest)
    dump = tmp_path / "exchange.dump"

    # The live database, gunicorn and the matcher still running: pg_dump reads one snapshot.
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), f"{POSTGRES}/{stack.database}"], check=True, timeout=120)
    stack.processes.close()  # the old exchange stops: each pair's queue has one consumer

    (tmp_path / "restored").mkdir()
    with Stack(tmp_path / "restored", name="restored", template="template0") as restored:  # empty; Redis flushed
        subprocess.run(["pg_restore", "--no-owner", "-d", f"{POSTGRES}/{restored.database}", str(dump)], check=True,
                       timeout=120)
        restored.start_matcher("BTC-USD")  # the matchers first, then what accepts orders
        rest = restored.start_rest(1)
        alice, bob = (Client(rest, key["key"], key["secret"]) for key in keys)

        assert books_and_balances(restored, rest) == before
        assert before["book"]["bids"] and before["book"]["asks"] and before["book_states"][0][2] > 0
        assert restored.audit()["problems"] == []

        order_ids = {row[1] for row in before["id_sequences"] if row[0] == "trading_order_id_seq"}
        taker = bob.place_order("BTC-USD", "buy", "limit", price="63000", size="0.3")
        fills = filled(bob, taker["order_id"])
        after = books_and_balances(restored, rest)

        assert taker["order_id"] > max(order_ids) and D(fills["average_fill_price"]) == D("63000")
        assert after["book"]["sequence"] == before["book"]["sequence"] + 1  # one batch, one delta, from where it was
        assert after["book_states"][0][2] == before["book_states"][0][2] + 1
        assert after["book"]["asks"][0] == before["book"]["asks"][1]  # 63000 is gone: 0.3 of its 0.3 taken
        assert restored.audit()["problems"] == []

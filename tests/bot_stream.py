"""A bot in its own process: random limit orders and cancels through signed REST.

    python -m tests.bot_stream BASE_URL KEY SECRET ORDERS SEED
Places ORDERS orders (a count, not a duration: how many get through in a given time depends on the
machine's load), cancelling some on the way, and prints how many it placed.
"""

import random
import sys
from decimal import Decimal

from hkt_client import Client
from hkt_client.errors import OrderAlreadyClosed


def stream(base_url: str, key: str, secret: str, orders: int, seed: int) -> int:
    rng = random.Random(seed)
    client = Client(base_url, key, secret)
    placed, live = 0, []
    while placed < orders:
        if live and rng.random() < 0.3:
            try:
                client.cancel_order(live.pop(rng.randrange(len(live))))
            except OrderAlreadyClosed:
                pass
            continue
        side = rng.choice(["buy", "sell"])
        price = Decimal(63000) + Decimal(rng.randint(-40, 40)) * Decimal("0.5")
        size = Decimal(rng.randint(1, 30)) / 1000
        order = client.place_order("BTC-USD", side, "limit", price=str(price), size=str(size))
        placed += 1
        if order["status"] in ("open", "partially_filled", "pending"):
            live.append(order["order_id"])
    return placed


if __name__ == "__main__":
    base_url, key, secret, orders, seed = sys.argv[1:6]
    print(stream(base_url, key, secret, int(orders), int(seed)))

"""A client generated from the served OpenAPI document (issue 17): `openapi-python-client generate` into a
temporary folder, imported, and trading against this server over HTTP (tests/live_server.py) with nothing
added but a signing ``httpx.Auth`` (SPEC section 3) over the bytes it sends. It runs the generator, a
process: slow."""

import importlib
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hkt_client.signing import signed_headers

from .live_server import serving

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

VENV_BIN = Path(sys.executable).parent


class Signing(httpx.Auth):
    """Signs each request as it goes out: its method, its path with the query as sent, its body bytes."""

    requires_request_body = True

    def __init__(self, key: str, secret: str):
        self.key, self.secret = key, secret

    def auth_flow(self, request: httpx.Request):
        request.headers.update(signed_headers(self.key, self.secret, request.method, request.url.raw_path.decode(),
                                              request.content))
        yield request


@pytest.fixture
def generated(tmp_path, monkeypatch):
    """The package openapi-python-client writes from the document this server serves, imported."""
    from django.test import Client

    document = tmp_path / "openapi.json"
    document.write_bytes(Client().get("/v1/openapi.json").content)
    result = subprocess.run(
        [VENV_BIN / "openapi-python-client", "generate", "--path", document, "--meta", "none",
         "--output-path", tmp_path / "exchange_client"],
        capture_output=True, text=True, timeout=300, env={"PATH": f"{VENV_BIN}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr  # nothing left out
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("exchange_client")
    for name in [name for name in sys.modules if name.partition(".")[0] == "exchange_client"]:
        del sys.modules[name]


def test_a_generated_client_trades_with_only_a_signing_auth(generated, funded, make_account, trade, markets):
    from accounts.keys import create_api_key
    from trading.models import Order

    from exchange_client.api.account import get_balances
    from exchange_client.api.markets import list_markets
    from exchange_client.api.orderbook import get_order_book
    from exchange_client.api.orders import cancel_order, create_order, get_order, list_orders
    from exchange_client.client import Client
    from exchange_client.models import LimitOrderRequest, MarketBySizeOrderRequest, Side, TimeInForce
    from exchange_client.models.limit_order_type import LimitOrderType
    from exchange_client.models.market_order_type import MarketOrderType

    maker = funded("maker", BTC="1")
    trade(maker, side="sell", type="limit", price=Decimal("30000"), size=Decimal("0.5"))
    bot = funded("bot", USD="100000")
    key, secret = create_api_key(bot, label="generated", scope="trade", ip_allowlist=[])

    with serving() as url, Client(base_url=url, httpx_args={"auth": Signing(key.public_id, secret)},
                                  raise_on_unexpected_status=True) as client:
        assert [market.pair for market in list_markets.sync(client=client)] == ["BTC-USD", "ETH-BTC", "ETH-USD"]
        assert get_order_book.sync(client=client, pair="BTC-USD").asks == [["30000.00", "0.50000000"]]

        resting = create_order.sync_detailed(client=client, body=LimitOrderRequest(
            pair="BTC-USD", side=Side.BUY, type_=LimitOrderType.LIMIT, price="29000.00", size="0.01",
            time_in_force=TimeInForce.GTC, client_order_id="generated-1"))
        assert resting.status_code == 201 and resting.parsed.status.value == "open"
        taken = create_order.sync(client=client, body=MarketBySizeOrderRequest(
            pair="BTC-USD", side=Side.BUY, type_=MarketOrderType.MARKET, size="0.02"))
        assert (taken.status.value, taken.filled_size, taken.average_fill_price) == ("filled", "0.02000000",
                                                                                  "30000.00")

        fetched = get_order.sync(client=client, id=f"client:{resting.parsed.client_order_id}")
        assert fetched.order_id == resting.parsed.order_id and fetched.price == "29000.00"
        assert [order.order_id for order in list_orders.sync(client=client, status="open").results] == [
            fetched.order_id]
        cancelled = cancel_order.sync(client=client, id=str(fetched.order_id))
        assert cancelled.status.value == "cancelled"

        usd = next(row for row in get_balances.sync(client=client).balances if row.asset == "USD")
        assert (usd.spot.available, usd.spot.locked) == ("99400.00", "0.00")  # 600 spent (the fee is in BTC)
        refused = create_order.sync_detailed(client=client, body=LimitOrderRequest(
            pair="BTC-USD", side=Side.BUY, type_=LimitOrderType.LIMIT, price="29000.005", size="0.01"))
        assert refused.status_code == 400 and refused.parsed.error.code.value == "INVALID_REQUEST"

    assert Order.objects.filter(account=bot).count() == 2

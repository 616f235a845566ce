"""The market page at / and /markets/<PAIR>, where it reads its candles, and the account overview's move
to /account/ (the page's script is exercised in a real browser by test_market_page_browser.py)."""

import json
import re
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.test import Client

from accounts.services import open_account


def page_config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="market-config" type="application/json">') + len(
        '<script id="market-config" type="application/json">')
    return json.loads(html[start:html.index("</script>", start)])


def test_the_root_is_the_first_markets_page_with_every_pair_to_choose(markets):
    response = Client().get("/")

    assert response.status_code == 200
    assert page_config(response) == {
        "pair": "BTC-USD", "base": "BTC", "quote": "USD", "price_places": 2, "size_places": 8, "quote_places": 2,
        "candles_url": "/v1/candles/BTC-USD?interval=1m&limit=240", "has_account": False,
    }
    html = response.content.decode()
    for pair in markets:
        assert f'<option value="/markets/{pair}"' in html
    for part in ['id="book-asks"', 'id="book-bids"', 'id="trades"', 'id="price-chart"', 'id="depth-chart"',
                 "/static/market/market.js", "/static/market/market.css"]:
        assert part in html
    assert 'href="/account/login/?next=/"' in html  # signed out: a way in, no account data


def test_a_market_not_online_says_so_on_its_page(markets):
    said = {}
    for status in ("online", "cancel_only", "halted"):
        markets["ETH-USD"].status = status
        markets["ETH-USD"].save(update_fields=["status"])
        html = Client().get("/markets/ETH-USD").content.decode()
        said[status] = re.findall(r'<div class="mk-halt" role="status">(.*?)</div>', html)

    assert said == {"online": [], "cancel_only": ["Cancel only: new orders are refused"],
                    "halted": ["Trading halted: orders and cancels are refused until it resumes"]}
    assert "mk-halt" not in Client().get("/markets/BTC-USD").content.decode()  # the others' pages are not


def test_a_pair_in_any_case_has_its_page_and_an_unknown_one_is_a_404(markets):
    eth_btc = Client().get("/markets/eth-btc")
    missing = Client().get("/markets/DOGE-USD")

    assert eth_btc.status_code == 200 and page_config(eth_btc)["pair"] == "ETH-BTC"
    assert page_config(eth_btc)["price_places"] == 5 and page_config(eth_btc)["quote_places"] == 8  # BTC's
    assert missing.status_code == 404


def test_a_signed_in_holder_gets_the_panels_the_script_fills_from_the_api(markets):
    user = get_user_model().objects.create_user("viewer", password="a-long-passw0rd!")
    open_account(user)
    client = Client()
    client.force_login(user)

    response = client.get("/markets/BTC-USD")

    assert page_config(response)["has_account"] is True
    assert 'id="open-orders"' in response.content.decode() and 'id="balances"' in response.content.decode()
    # What the script reads with the session: the API's own endpoints, GET only.
    assert client.get("/v1/orders?status=live&limit=50&pair=BTC-USD").status_code == 200
    assert client.get("/v1/account/balances").status_code == 200


def test_a_login_without_a_trading_account_is_told_so_and_the_script_reads_no_private_api(markets):
    operator = get_user_model().objects.create_superuser("operator", password="a-long-passw0rd!")
    client = Client()
    client.force_login(operator)

    response = client.get("/markets/BTC-USD")

    assert page_config(response)["has_account"] is False  # the script leaves the private panels alone
    html = response.content.decode()
    assert "This login has no trading account." in html
    assert 'id="open-orders"' not in html and 'id="balances"' not in html


def test_the_price_chart_reads_the_latest_minutes_from_the_candles_api(markets, alice, bob, trade):
    trade(bob, side="sell", type="limit", price=Decimal("63000.05"), size=Decimal("0.01"))
    trade(alice, side="buy", type="limit", price=Decimal("63000.05"), size=Decimal("0.004"))
    trade(alice, side="buy", type="limit", price=Decimal("63000.05"), size=Decimal("0.002"))

    rows = Client().get(page_config(Client().get("/markets/BTC-USD"))["candles_url"]).json()
    empty = Client().get(page_config(Client().get("/markets/ETH-USD"))["candles_url"]).json()

    assert len(rows) == 1
    time_ms, *prices, volume, quote_volume, count = rows[0]
    assert time_ms % 60_000 == 0
    assert prices == ["63000.05"] * 4
    assert (volume, quote_volume, count) == ("0.00600000", "378.0003000000", 2)
    assert empty == []
    assert Client().get("/markets/BTC-USD/candles").status_code == 404  # the page-only read it replaced


def test_the_account_overview_moved_to_account_and_every_page_links_markets_and_account(markets):
    overview = Client().get("/account/")

    assert overview.status_code == 200
    for link in [b'href="/"', b'href="/v1/docs"', b'href="/account/keys/"', b'href="/admin/"']:
        assert link in overview.content
    assert b'href="/account/"' in Client().get("/").content


def test_with_no_market_listed_the_root_leads_to_the_account_overview(db):
    assert Client().get("/")["Location"] == "/account/"

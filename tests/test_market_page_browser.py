"""The market page in a real browser (headless Chromium) against the production processes in the
sandbox: the book and trades follow the stream live, and the page recovers by itself when its
WebSocket drops."""

import shutil

import pytest
from hkt_client import Client

from .csp import csp_violations, watch_csp

CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)"),
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The production processes in the sandbox: Daphne serving the pages, the REST API and /v1/ws on one
    address (as the proxy does), and BTC-USD's matcher."""
    from .stack import Stack

    with Stack(tmp_path_factory.mktemp("market_page"), EXCHANGE_ENVIRONMENT="sandbox") as stack:
        stack.manage("collectstatic", "--no-input", "-v", "0")
        stack.start_matcher("BTC-USD")
        yield stack, stack.start_daphne(processes=1)


def test_the_page_follows_the_book_and_trades_live_and_survives_a_dropped_socket(sandbox, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    stack, server = sandbox
    maker, taker = (Client(server, t["key"], t["secret"]) for t in
                    stack.create_traders(["page-maker", "page-taker"], "USD=1000000", "BTC=100"))
    maker.place_order("BTC-USD", "buy", "limit", price="62990.00", size="0.25")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        watch_csp(page)
        page.goto(f"{server}/markets/BTC-USD")
        bids, asks, trades = page.locator("#book-bids"), page.locator("#book-asks"), page.locator("#trades")
        expect(bids.locator('[data-price="62990.00"]')).to_contain_text("0.25000000")  # the snapshot
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
        expect(page.locator("#sandbox-banner")).to_be_visible()

        maker.place_order("BTC-USD", "sell", "limit", price="63010.00", size="0.5")  # a delta adds a level
        expect(asks.locator('[data-price="63010.00"]')).to_contain_text("0.50000000")
        sold = taker.place_order("BTC-USD", "buy", "limit", price="63010.00", size="0.2")  # a trade, and a delta
        expect(trades.locator(".mk-row.buy").first).to_contain_text("63,010.00")
        expect(asks.locator('[data-price="63010.00"]')).to_contain_text("0.30000000")
        expect(page.locator("#ticker-last")).to_have_text("63,010.00")

        page.evaluate("window.marketPage.dropConnection()")
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "reconnecting")
        maker.place_order("BTC-USD", "buy", "limit", price="62995.00", size="0.1")  # while away, or just after
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "live", timeout=15_000)
        expect(bids.locator('[data-price="62995.00"]')).to_contain_text("0.10000000")
        taker.place_order("BTC-USD", "sell", "limit", price="62990.00", size="0.05")  # after the reconnect
        expect(bids.locator('[data-price="62990.00"]')).to_contain_text("0.25000000")
        expect(bids.locator('[data-price="62995.00"]')).to_contain_text("0.05000000")
        expect(trades.locator(".mk-row.sell").first).to_contain_text("62,995.00")
        counters = page.evaluate("[window.marketPage.reconnects, window.marketPage.resyncs]")
        # A level's depth bar is as wide as its share of the deepest side (set through the style object).
        bar_width = bids.locator('[data-price="62990.00"] i.bar').evaluate("bar => bar.style.width")
        violations = csp_violations(page)
        page.screenshot(path=tmp_path / "market-page.png", full_page=True)
        browser.close()

    assert sold["status"] == "filled"
    assert counters == [1, 0]
    assert bar_width.endswith("%") and 0 < float(bar_width[:-1]) <= 100
    assert violations == []  # the stream (ws: to this site) and the page's own files only  # one reconnect; every delta followed in sequence with its checksum right
    assert (tmp_path / "market-page.png").stat().st_size > 10_000

"""The market page (``/`` and ``/markets/<PAIR>``).

The page itself is a template and a script (static/market/market.js) that reads the public REST API
(its price chart: ``GET /v1/candles``), follows the book, trades and ticker over ``/v1/ws`` like any
bot, and, for a signed-in browser, reads open orders and balances from the REST API with its session
(GET only, so nothing it does can be forged across sites).
"""

from urllib.parse import urlencode

from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_safe

from accounts.services import account_of
from exchange.errors import UnknownPair
from trading.markets import access_market
from trading.models import Market

CANDLES_SHOWN = {"interval": "1m", "limit": 240}  # four hours of minutes: what the price chart draws


def page_market(pair: str | None) -> Market | None:
    """The market named ``pair`` (a 404 page when there is none), or the first one when none is named."""
    if pair is None:
        return Market.objects.with_assets().order_by("pair").first()
    try:
        return access_market(pair)
    except UnknownPair:
        raise Http404(f"No market {pair}.") from None


def places(step) -> int:
    """Decimal places of a grid step (0.01 -> 2, 5 -> 0): how the page formats the totals it adds up."""
    return max(0, -step.normalize().as_tuple().exponent)


@require_safe
def market_page(request, pair: str | None = None):
    market = page_market(pair)
    if market is None:  # nothing listed yet (a fresh database): the account overview says where to go
        return redirect("accounts:index")
    # The panels of the holder's orders and balances read the private API: a login without a trading account
    # (an operator) has none to read.
    has_account = account_of(request.user) is not None
    return render(request, "market/page.html", {
        "market": market,
        "has_account": has_account,
        "markets": Market.objects.with_assets().order_by("pair"),
        "page_config": {"pair": market.pair, "base": market.base.symbol, "quote": market.quote.symbol,
                        "price_places": places(market.tick_size), "size_places": places(market.lot_size),
                        "quote_places": market.quote.precision,
                        "candles_url": f"{reverse('candles-detail', args=[market.pair])}?{urlencode(CANDLES_SHOWN)}",
                        "has_account": has_account},
    })

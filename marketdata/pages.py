"""The market page (``/`` and ``/markets/<PAIR>``) and the one read it needs that the API has no
endpoint for yet: the pair's per-minute candles.

The page itself is a template and a script (static/market/market.js) that reads the public REST API,
follows the book, trades and ticker over ``/v1/ws`` like any bot, and, for a signed-in browser, reads
open orders and balances from the REST API with its session (GET only, so nothing it does can be
forged across sites).
"""

from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from exchange.errors import UnknownPair, error_json_response
from exchange.fields import to_milliseconds
from exchange.money import format_amount
from marketdata import services
from trading.markets import access_market
from trading.models import Market

CANDLES_SHOWN = 240  # four hours of minutes: what the price chart draws


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


@require_GET
def market_page(request, pair: str | None = None):
    market = page_market(pair)
    if market is None:  # nothing listed yet (a fresh database): the account overview says where to go
        return redirect("accounts:index")
    return render(request, "market/page.html", {
        "market": market,
        "markets": Market.objects.with_assets().order_by("pair"),
        "page_config": {"pair": market.pair, "base": market.base.symbol, "quote": market.quote.symbol,
                        "price_places": places(market.tick_size), "size_places": places(market.lot_size),
                        "candles_url": reverse("market:candles", args=[market.pair]),
                        "signed_in": request.user.is_authenticated},
    })


@require_GET
def candles(request, pair: str):
    """The pair's latest per-minute candles as SPEC section 10 writes the rows of ``GET /v1/candles``:
    ``[time_ms, open, high, low, close, volume, quote_volume, trade_count]``, oldest first."""
    try:
        market = access_market(pair)
    except UnknownPair as error:
        return error_json_response(error)
    tick, lot = market.tick_size, market.lot_size
    quote = tick * lot
    rows = [
        [to_milliseconds(c.minute), *(format_amount(v, tick) for v in (c.open, c.high, c.low, c.close)),
         format_amount(c.volume, lot), format_amount(c.quote_volume, quote), c.trades]
        for c in services.minute_candles(market, limit=CANDLES_SHOWN)
    ]
    return JsonResponse(rows, safe=False)

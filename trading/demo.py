"""Demo assets and markets for a laptop, the sandbox and tests."""

from decimal import Decimal

from trading.models import Asset, Market

ASSETS = [
    # symbol, name, display precision, circulating supply
    ("BTC", "Bitcoin", 8, Decimal("19800000")),
    ("ETH", "Ether", 8, Decimal("120400000")),
    ("USD", "US Dollar", 2, None),
]
MARKETS = [
    # base, quote, tick size, lot size, min size, min notional
    ("BTC", "USD", Decimal("0.01"), Decimal("0.00000001"), Decimal("0.00001"), Decimal("1.00")),
    ("ETH", "USD", Decimal("0.01"), Decimal("0.0001"), Decimal("0.001"), Decimal("1.00")),
    ("ETH", "BTC", Decimal("0.00001"), Decimal("0.0001"), Decimal("0.001"), Decimal("0.0001")),
]


def load_demo_markets() -> list[Market]:
    """Create what is missing; never change a market an operator has already tuned."""
    assets = {}
    for symbol, name, precision, supply in ASSETS:
        assets[symbol], _ = Asset.objects.get_or_create(
            symbol=symbol, defaults={"name": name, "precision": precision, "circulating_supply": supply}
        )
    markets = []
    for base, quote, tick, lot, min_size, min_notional in MARKETS:
        grid = {"tick_size": tick, "lot_size": lot, "min_size": min_size, "min_notional": min_notional}
        market = Market.objects.filter(base=assets[base], quote=assets[quote]).first()
        markets.append(market or Market.objects.create(base=assets[base], quote=assets[quote], **grid))
    return markets

"""Markets as order entry and the read models take them: by pair, from a recent copy or locked."""

import re
import time

from exchange.errors import UnknownPair
from exchange.fields import PAIR_PATTERN
from trading.models import Market

# How long access_market(recent=True) may answer from this process's memory. Operators rarely edit
# a market; order entry re-checks what it relies on in the statement that writes the order anyway.
RECENT_MARKET_SECONDS = 60.0


class RecentMarkets(dict):
    """pair -> (when it was read, the market), in this process."""

    def reset(self) -> None:
        self.clear()


recent_markets = RecentMarkets()
PAIR_SHAPE = re.compile(PAIR_PATTERN)


def access_market(pair: str, *, recent: bool = False, lock: bool = False) -> Market:
    """The market (with its assets) named ``pair`` in any case; UNKNOWN_PAIR if there is none.

    ``recent``: a copy read by this process up to RECENT_MARKET_SECONDS ago will do (its status and
    grids may be out of date; order entry checks them again when it writes the order). ``lock``:
    read the row itself and keep its status and grids from changing until the transaction ends.
    """
    if not PAIR_SHAPE.fullmatch(pair):  # "btc-uſd" would be BTC-USD by str.upper(); no look-up for it
        raise UnknownPair(pair)
    key = pair.upper()
    if recent:
        read_at, market = recent_markets.get(key, (float("-inf"), None))
        if time.monotonic() - read_at < RECENT_MARKET_SECONDS:
            return market
    markets = Market.objects.with_assets()
    if lock:
        markets = markets.select_for_update(no_key=True, of=("self",))  # not against orders' foreign keys
    try:
        market = markets.get(pair=key)
    except Market.DoesNotExist:
        raise UnknownPair(pair) from None
    recent_markets[key] = (time.monotonic(), market)
    return market

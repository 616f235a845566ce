"""Stream messages built without a dict per message must still be the JSON that SPEC section 7 defines,
and what the publisher remembers between batches."""

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from marketdata.streams import trade_texts
from marketdata import publishing
from trading.batch_writer import BatchResult, BookDelta
from trading.settlement import TradeRecord
from trading.models import Market

D = Decimal


def test_trade_texts_are_the_trade_messages_as_json():
    market = Market(pair="BTC-USD", tick_size=D("0.01"), lot_size=D("0.00000001"))
    first = datetime(2026, 12, 1, 14, 0, 0, 123456, tzinfo=timezone.utc)
    later = first + timedelta(milliseconds=7)
    trades = [TradeRecord(41, D("63000.000000000000000000"), D("0.2"), "buy", first),
              TradeRecord(42, D("62999.99"), D("0.000000015"), "sell", later)]  # a size finer than the lot

    assert [json.loads(text) for text in trade_texts(market, trades)] == [
        {"type": "trade", "channel": "trades", "pair": "BTC-USD", "trade_id": 41, "price": "63000.00",
         "size": "0.20000000", "taker_side": "buy", "time": 1796133600123},
        {"type": "trade", "channel": "trades", "pair": "BTC-USD", "trade_id": 42, "price": "62999.99",
         "size": "0.000000015", "taker_side": "sell", "time": 1796133600130},
    ]


@pytest.mark.django_db
def test_the_top_of_book_is_remembered_after_a_batch_that_traded(btc_usd):
    """Else the next batch, which leaves the top where it is, would owe a ticker that did not change."""
    top = [(D("63000"), D("0.3"))]
    traded = BatchResult(market=btc_usd, commands=0, states={}, orders=[], fills=[],
                         trades=[TradeRecord(1, D("63000"), D("0.2"), "buy", datetime.now(timezone.utc))],
                         delta=BookDelta(sequence=1, bids=[], asks=top, top_bids=[], top_asks=top))
    publishing.publish_batch(None, traded)

    assert publishing.tickers.top_of_book["BTC-USD"] == ([], top)


@pytest.mark.django_db
def test_a_batch_whose_account_events_could_not_be_numbered_still_publishes_its_trades(btc_usd, monkeypatch):
    """A part of a batch's publishing that fails costs only itself: the trades need no event numbers."""
    from exchange.redis import Reply
    from trading.backends import bus

    sent = []
    monkeypatch.setattr(type(bus()), "send", lambda self, messages: sent.extend(messages))

    def numbering_failed(self, account_ids, trip):
        reply = Reply()
        reply.error = RuntimeError("INCR failed")
        return reply

    monkeypatch.setattr(type(bus()), "number_account_events", numbering_failed)
    now = datetime.now(timezone.utc)
    result = BatchResult(market=btc_usd, commands=1, states={}, orders=[(7, 1)], fills=[(7, 1)],
                         trades=[TradeRecord(1, D("63000"), D("0.2"), "buy", now)],
                         delta=BookDelta(sequence=1, bids=[], asks=[(D("63000"), D("0.1"))], top_bids=[],
                                         top_asks=[(D("63000"), D("0.1"))]))

    publishing.send_batch(result)

    assert [message["type"] for _, message in sent] == ["book.delta", "market.trades"]

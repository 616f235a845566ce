from decimal import Decimal

import pytest

from trading.models import BookLevel, BookState, Fill, Order, Trade

from .conftest import balance_of

D = Decimal


def test_limit_orders_cross_and_settle_to_the_cent(alice, bob, trade):
    ask = trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
    bid = trade(bob, side="buy", type="limit", price=D("63100"), size=D("0.2"))

    ask.refresh_from_db()
    assert ask.status == "partially_filled" and ask.filled_size == D("0.2")
    assert bid.status == "filled" and bid.executed_value == D("12600")
    # bob pays 63,000 (maker's price) per BTC, taker fee 0.2 % in BTC; alice's maker fee 0.1 % in USD
    assert bid.fee == D("0.0004") and ask.fee == D("12.6")
    assert balance_of(bob, "BTC").available == D("10.1996")
    assert balance_of(bob, "USD").available == D("87400") and balance_of(bob, "USD").locked == 0
    assert balance_of(alice, "USD").available == D("112587.4")
    assert balance_of(alice, "BTC").locked == D("0.3") and balance_of(alice, "BTC").available == D("9.5")
    assert Trade.objects.get().price == D("63000")
    assert Fill.objects.count() == 2
    assert list(BookLevel.objects.values_list("side", "price", "size")) == [("ask", D("63000"), D("0.3"))]
    assert BookState.objects.get().sequence == 2


def test_audit_passes_after_trading_and_names_each_corruption(alice, bob, trade):
    from trading.audit import audit
    from trading.models import Balance, LedgerEntry

    trade(alice, side="sell", type="limit", price=D("63000"), size=D("0.5"))
    trade(bob, side="buy", type="limit", price=D("63000"), size=D("0.2"))
    assert audit() == []

    Balance.objects.filter(account=bob, asset__symbol="USD").update(available=D("1"))
    LedgerEntry.objects.filter(reason="trade").first().delete()
    Order.objects.filter(account=alice).update(filled_size=D("0.3"))

    problems = "\n".join(audit())
    assert "USD" in problems or "held but" in problems
    assert "does not sum to zero" in problems
    assert f"order {Order.objects.get(account=alice).pk}: filled" in problems

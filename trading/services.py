"""Trading services: each owns its transaction and leaves an audit trail."""

from django.db import transaction

from trading.models import Market


@transaction.atomic
def set_market_status(market_id: int, status: str) -> Market:
    """Halt a market, let it only cancel, or bring it back online."""
    market = Market.objects.select_for_update().get(pk=market_id)
    if status not in Market.Status.values:
        raise ValueError(f"unknown market status {status!r}")
    market.status = status
    market.save(update_fields=["status"])
    return market

"""Whether each active market's matcher keeps up: /readyz's matcher check (exchange/health.py)."""

from datetime import timedelta

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from trading.models import Market, MatcherCommand


def lagging_matchers() -> dict | None:
    """``{"lagging": {pair: seconds}, "budget_seconds": ...}``: the online and cancel-only markets whose oldest
    queued command waits longer than MATCHER_LAG_BUDGET_SECONDS, with its age; None when every one keeps up. A halted
    market's queue waits for its resume, so it is not counted. One query: each market's oldest command
    is the first of its (market, id) index."""
    oldest = MatcherCommand.objects.filter(market=OuterRef("pk")).order_by("pk").values("queued_at")[:1]
    markets = Market.objects.filter(status__in=(Market.Status.ONLINE, Market.Status.CANCEL_ONLY))
    now = timezone.now()
    budget = timedelta(seconds=settings.MATCHER_LAG_BUDGET_SECONDS)
    lagging = {pair: round((now - queued_at).total_seconds(), 3)
               for pair, queued_at in markets.annotate(oldest=Subquery(oldest)).values_list("pair", "oldest")
               if queued_at is not None and now - queued_at > budget}
    return {"lagging": lagging, "budget_seconds": settings.MATCHER_LAG_BUDGET_SECONDS} if lagging else None

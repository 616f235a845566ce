"""The metrics read from the database at each scrape (exchange/metrics.py, SCRAPED): what it knows exactly
whichever process changed it. Two small queries per scrape, none on a request."""

from django.db.models import Count, Min
from django.utils import timezone

from trading.models import AuditRun, Market, MatcherCommand


def matcher_queues():
    """Each market's queued commands and the age of its oldest (0 when none, or when the market is halted:
    its queue waits for the resume, and /readyz does not count it either)."""
    now = timezone.now()
    queued = {pair: (count, oldest) for pair, count, oldest in MatcherCommand.objects.values("market__pair").annotate(
        count=Count("id"), oldest=Min("queued_at")).values_list("market__pair", "count", "oldest")}
    for pair, status in Market.objects.order_by("pair").values_list("pair", "status"):
        count, oldest = queued.get(pair, (0, None))
        yield "exchange_matcher_queue_depth", (pair,), count
        yield "exchange_matcher_oldest_command_age_seconds", (pair,), 0 if oldest is None or (
            status == Market.Status.HALTED) else (now - oldest).total_seconds()


def last_audit():
    """The last ledger audit's result (AuditRun, however it was started); nothing before the first."""
    run = AuditRun.objects.order_by("-started_at").values_list("problem_count", "started_at", "duration").first()
    if run is not None:
        problems, started_at, duration = run
        yield "exchange_ledger_audit_problems", (), problems
        yield "exchange_ledger_audit_last_run_timestamp_seconds", (), started_at.timestamp()
        yield "exchange_ledger_audit_duration_seconds", (), duration.total_seconds()

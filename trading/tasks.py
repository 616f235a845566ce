import logging

from celery import shared_task
from celery.signals import worker_ready

from trading import dispatch, fees
from trading.audit import run_audit
from trading.models import AuditRun

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="trading.match_pair", ignore_result=True, acks_late=True, max_retries=None)
def match_pair(self, pair: str) -> int:
    """Drain one pair's command queue. Only the pair's own worker (queue match.<PAIR>) runs this.

    A failed drain (the database restarting, a batch refused) is retried with backoff, for as long as
    it fails: its commands are committed and wait in the queue, and no new order may be needed to move
    them. One retry per pair waits at a time; new orders still queue their wake-up meanwhile, which
    drains at once (the database may be back long before the retry is due)."""
    try:
        drained = dispatch.run_matcher(pair)
    except Exception as error:
        delay = dispatch.drain_failed(pair, self.request.id)
        if delay is None:
            logger.warning("the matcher of %s failed (%r); its pending retry will drain again", pair, error)
            return 0
        logger.exception("the matcher of %s failed; retrying in %.0f s", pair, delay)
        try:
            retry = self.retry(exc=error, countdown=delay)
        except Exception:  # the retry could not be queued (the broker is down too)
            logger.exception("could not queue the retry of %s's matcher; waking it from here", pair)
            dispatch.retry_not_queued(pair, self.request.id)
            return 0
        raise retry from None
    dispatch.drain_succeeded(pair, self.request.id)
    return drained


@shared_task(name="trading.assign_fee_tiers", ignore_result=True)
def assign_fee_tiers_task() -> dict:
    """Move accounts between the fee tiers assigned by 30-day volume. Beat runs it daily; a repeat moves
    nothing more."""
    summary = fees.assign_fee_tiers().summary()
    logger.info("fee tiers: %s", summary)
    return summary


@shared_task(name="trading.audit_ledger", ignore_result=True)
def audit_ledger_task() -> int:
    """Prove the books balance, while trading goes on, and keep the result (an AuditRun, shown in the admin).
    Beat runs it every few minutes."""
    run = run_audit(AuditRun.Trigger.BEAT)
    if run.problem_count:
        logger.error("ledger audit %s: %d problem(s); the first: %s", run.pk, run.problem_count, run.problems[0])
    else:
        logger.info("ledger audit %s: clean in %.1f s", run.pk, run.duration.total_seconds())
    return run.pk


@worker_ready.connect
def drain_on_start(sender, **kwargs):
    """A restarted matcher first finishes what was queued while it was down."""
    for queue in sender.task_consumer.queues:
        if queue.name.startswith("match."):
            pair = queue.name.removeprefix("match.")
            match_pair.apply_async(args=[pair], queue=queue.name)

import logging

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from trading import dispatch, fees
from trading.audit import run_audit
from trading.models import AuditRun

logger = logging.getLogger(__name__)


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


# The matcher loops this worker runs, if it serves any pair.
_loops: list[dispatch.MatcherLoops] = []


@worker_ready.connect
def start_matcher_loops(sender, **kwargs):
    """A worker that serves queues match.<PAIR> runs those pairs' matchers as loops of their own
    (trading.dispatch.MatcherLoops), woken through Redis rather than by a task per wake-up: the queues
    name the pairs a worker serves (bin/supervise, tests/stack.py)."""
    pairs = [queue.name.removeprefix("match.") for queue in sender.task_consumer.queues
             if queue.name.startswith("match.")]
    if pairs:
        _loops.append(dispatch.MatcherLoops(pairs))
        _loops[-1].start()


@worker_shutdown.connect
def stop_matcher_loops(**kwargs):
    """A warm shutdown lets each loop finish the drain at hand (supervisord waits up to 60 s)."""
    while _loops:
        _loops.pop().stop()

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.core.cache import cache

from trading import dispatch

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="trading.match_pair", ignore_result=True, acks_late=True, max_retries=None)
def match_pair(self, pair: str) -> int:
    """Drain one pair's command queue. Only the pair's own worker (queue match.<PAIR>) runs this.

    A failed drain (the database restarting, a batch refused) is retried with backoff, for as long as
    it fails: its commands are committed and wait in the queue, and no new order may be needed to move
    them. While the retry waits, the pair's wake flag is held, so new orders queue no other task."""
    try:
        return dispatch.run_matcher(pair)
    except Exception as error:
        delay = dispatch.retry_delay(self.request.retries + 1)
        logger.exception("the matcher of %s failed; retrying in %.0f s", pair, delay)
        try:
            cache.set(dispatch.wake_flag(pair), 1, timeout=delay + dispatch.WAKE_FLAG_SECONDS)
        except Exception:  # Redis down too: new orders may queue more wake-ups; the retry still goes
            logger.exception("could not hold the wake flag of %s", pair)
        raise self.retry(exc=error, countdown=delay) from None


@worker_ready.connect
def drain_on_start(sender, **kwargs):
    """A restarted matcher first finishes what was queued while it was down."""
    for queue in sender.task_consumer.queues:
        if queue.name.startswith("match."):
            pair = queue.name.removeprefix("match.")
            match_pair.apply_async(args=[pair], queue=queue.name)

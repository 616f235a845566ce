from celery import shared_task
from celery.signals import worker_ready

from trading import dispatch


# A failed drain (the database restarting, a batch refused) is retried with backoff up to 30 s, for
# as long as it fails: its commands are committed and wait in the queue, and no new order may be
# needed to move them.
@shared_task(name="trading.match_pair", ignore_result=True, acks_late=True, autoretry_for=(Exception,),
             retry_backoff=1, retry_backoff_max=30, max_retries=None)
def match_pair(pair: str) -> int:
    """Drain one pair's command queue. Only the pair's own worker (queue match.<PAIR>) runs this."""
    return dispatch.run_matcher(pair)


@worker_ready.connect
def drain_on_start(sender, **kwargs):
    """A restarted matcher first finishes what was queued while it was down."""
    for queue in sender.task_consumer.queues:
        if queue.name.startswith("match."):
            pair = queue.name.removeprefix("match.")
            match_pair.apply_async(args=[pair], queue=queue.name)

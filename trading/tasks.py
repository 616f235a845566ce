from celery import shared_task
from celery.signals import worker_ready

from trading import dispatch


@shared_task(name="trading.match_pair", ignore_result=True, acks_late=True)
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

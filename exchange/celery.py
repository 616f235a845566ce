import logging
import os
from logging.config import dictConfig

from celery import Celery
from celery.signals import setup_logging, task_failure, task_retry
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

app = Celery("exchange")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def log_as_the_servers_do(loglevel=None, **kwargs):
    """Workers' lines in the format of the servers' (settings.LOGGING: JSON or text, redacted, exchange/logs.py),
    instead of Celery's own, at the more talkative of ``--loglevel`` and ``LOG_LEVEL`` (so that LOG_LEVEL=DEBUG
    shows the matchers' lines for each order, as it does the servers')."""
    levels = [logging.getLevelName(str(level).upper()) if not isinstance(level, int) else level
              for level in (loglevel or logging.INFO, settings.LOGGING["root"]["level"])]
    dictConfig({**settings.LOGGING, "root": {**settings.LOGGING["root"], "level": min(levels)}})


# The metrics are imported when a task ends, not with this module: `import exchange` loads it before Django is set up.
@task_failure.connect
def count_failure(sender=None, **kwargs):
    from exchange.metrics import CELERY_TASK_FAILURES

    CELERY_TASK_FAILURES.labels(sender.name).inc()


@task_retry.connect
def count_retry(sender=None, **kwargs):
    from exchange.metrics import CELERY_TASK_RETRIES

    CELERY_TASK_RETRIES.labels(sender.name).inc()

import logging
import os
from logging.config import dictConfig

from celery import Celery
from celery.signals import setup_logging
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

app = Celery("exchange")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def log_as_the_servers_do(loglevel=None, **kwargs):
    """Workers' lines in the format of the servers' (settings.LOGGING: JSON or text, redacted, exchange/logs.py) at
    the level ``--loglevel`` says, instead of Celery's own format."""
    dictConfig({**settings.LOGGING, "root": {**settings.LOGGING["root"], "level": loglevel or logging.INFO}})

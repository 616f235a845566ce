import logging

from celery import shared_task

from earn.interest import accrue_interest

logger = logging.getLogger(__name__)


@shared_task(name="earn.accrue_interest", ignore_result=True)
def accrue_interest_task() -> dict:
    """Pay the interest owed up to yesterday (UTC). Beat runs it hourly: it pays a day once it has ended
    and catches up after a missed or stopped run; runs repeated or overlapping pay nothing twice."""
    summary = accrue_interest().summary()
    logger.info("interest accrual: %s", summary)
    return summary

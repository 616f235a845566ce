import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from earn.interest import accrue_interest


class Command(BaseCommand):
    help = ("Pay earn subscriptions' daily interest owed up to a day (default and at most: yesterday, UTC), each "
            "day once however often it runs. Prints what it did as JSON; exits non-zero when the interest "
            "account could not pay (fund it, then run it again).")

    def add_arguments(self, parser):
        parser.add_argument("--date", type=date.fromisoformat, help="The last day (UTC) to pay, YYYY-MM-DD.")

    def handle(self, *args, date, **options):
        run = accrue_interest(date)
        self.stdout.write(json.dumps(run.summary()))
        if run.shortfalls:
            raise CommandError("the interest account is short: " + "; ".join(map(str, run.shortfalls)))

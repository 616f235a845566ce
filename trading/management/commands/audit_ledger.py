import json

from django.core.management.base import BaseCommand, CommandError

from trading.audit import audit
from trading.models import MatcherCommand, Order


class Command(BaseCommand):
    help = "Check the ledger and book invariants; exit non-zero if any is violated."

    def handle(self, *args, **options):
        problems = audit()
        summary = {
            "problems": problems,
            "orders": Order.objects.count(),
            "pending_commands": MatcherCommand.objects.count(),
        }
        self.stdout.write(json.dumps(summary))
        if problems:
            raise CommandError(f"{len(problems)} invariant(s) violated")

import json

from django.core.management.base import BaseCommand, CommandError

from trading.audit import run_audit
from trading.models import AuditRun


class Command(BaseCommand):
    help = ("Check the ledger and book invariants in one snapshot, while trading goes on; keep the result (an "
            "AuditRun) and exit non-zero if any is violated.")

    def handle(self, *args, **options):
        run = run_audit(AuditRun.Trigger.COMMAND)
        summary = {
            "problems": run.problems,
            "problem_count": run.problem_count,
            **run.counts,
            "audit_run": run.pk,
            "started_at": run.started_at.isoformat(),
            "seconds": round(run.duration.total_seconds(), 3),
        }
        self.stdout.write(json.dumps(summary))
        if run.problem_count:
            raise CommandError(f"{run.problem_count} invariant(s) violated; the first: {run.problems[0]}")

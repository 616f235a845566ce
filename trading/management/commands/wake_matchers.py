import logging

from django.core.management.base import BaseCommand, CommandError

from trading import dispatch
from trading.backends import matchers
from trading.models import Market, MatcherCommand

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = ("Wake the matcher of every market with queued commands: in the embedded default drain them "
            "here (bin/run-local does, before serving, so a crash between a commit and its wake-up loses "
            "nothing); with Celery, wake each pair's matcher loop (safe to run from cron). Exits non-zero, "
            "naming them, when a pair's drain or wake-up failed: its commands stay queued.")

    def handle(self, *args, **options):
        pairs = sorted(Market.objects.filter(pk__in=MatcherCommand.objects.values("market_id"))
                       .exclude(status=Market.Status.HALTED).values_list("pair", flat=True))
        failed = []
        for pair in pairs:
            try:  # not dispatch.wake_matcher: its retry is a timer of this process, which ends here
                matchers().wake(pair, dispatch.run_matcher)
            except Exception:
                logger.exception("could not wake the matcher of %s", pair)
                failed.append(pair)
        if options["verbosity"]:
            woken = [pair for pair in pairs if pair not in failed]
            self.stdout.write(f"woke {len(woken)} matcher(s): {', '.join(woken) or '-'}")
        if failed:
            raise CommandError(f"could not wake the matcher(s) of {', '.join(failed)}: their commands stay "
                               "queued (see the log); run this again")

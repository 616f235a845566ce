from django.core.management.base import BaseCommand

from trading import dispatch
from trading.models import Market, MatcherCommand


class Command(BaseCommand):
    help = ("Wake the matcher of every market with queued commands: in the embedded default drain them "
            "here (bin/run-local does, before serving, so a crash between a commit and its wake-up loses "
            "nothing); with Celery, wake each pair's matcher loop (safe to run from cron).")

    def handle(self, *args, **options):
        pairs = sorted(Market.objects.filter(pk__in=MatcherCommand.objects.values("market_id"))
                       .exclude(status=Market.Status.HALTED).values_list("pair", flat=True))
        for pair in pairs:
            dispatch.wake_matcher(pair)
        if options["verbosity"]:
            self.stdout.write(f"woke {len(pairs)} matcher(s): {', '.join(pairs) or '-'}")

import signal
import threading

from django.core.management.base import BaseCommand

from trading import deadman


class Command(BaseCommand):
    help = ("Fire the dead-man's switches (POST /v1/orders/cancel-all-after) not refreshed in time: cancel their "
            f"orders through the matchers, looking every {deadman.POLL_SECONDS} s until SIGTERM or SIGINT. "
            "bin/supervise runs it (role periodic), bin/run-local beside the server; --once fires what is due "
            "and exits (cron, scripts). Safe to run twice: a switch fires once.")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="fire what is due now, print how many, and exit")

    def handle(self, *args, **options):
        if options["once"]:
            self.stdout.write(f"fired {deadman.fire_all_due()} switch(es)")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write("watching the dead-man's switches", ending="\n")
        self.stdout.flush()
        deadman.watch(stop)

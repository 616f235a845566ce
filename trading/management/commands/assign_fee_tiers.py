import json

from django.core.management.base import BaseCommand

from trading.fees import assign_fee_tiers


class Command(BaseCommand):
    help = ("Move user accounts between the fee tiers that have a minimum 30-day volume, each to the highest one its "
            "volume reaches (tiers without a minimum are manual and left alone). Celery beat runs it daily; running "
            "it again moves nothing more. Prints the accounts moved as JSON.")

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(assign_fee_tiers().summary()))

"""The rows the exchange cannot run without: the retail and market-maker tiers and the fee account."""

from decimal import Decimal

from django.db import migrations

TIERS = [
    # name, weight per minute, maker fee, taker fee
    ("retail", 1200, Decimal("0.0010"), Decimal("0.0020")),
    ("market_maker", 6000, Decimal("0.0000"), Decimal("0.0010")),
]


def create_tiers_and_fee_account(apps, schema_editor):
    RateTier = apps.get_model("accounts", "RateTier")
    Account = apps.get_model("accounts", "Account")
    for name, weight, maker, taker in TIERS:
        RateTier.objects.get_or_create(
            name=name, defaults={"weight_per_minute": weight, "maker_fee_rate": maker, "taker_fee_rate": taker}
        )
    Account.objects.get_or_create(kind="fee", defaults={"rate_tier": RateTier.objects.get(name="retail")})


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(create_tiers_and_fee_account, migrations.RunPython.noop)]

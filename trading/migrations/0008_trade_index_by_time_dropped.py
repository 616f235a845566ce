from django.db import migrations


class Migration(migrations.Migration):
    """Apart from the candles' backfill, so that the lock it takes on the trades is held only briefly."""

    dependencies = [
        ("trading", "0007_candles"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="trade",
            name="trading_tra_market__7a228c_idx",
        ),
    ]

import importlib

from django.db import migrations

# 0018's trigger on UPDATE: its transition table copied every row a batch's UPDATE touched (about 2,000 whole
# order rows) to find the few hundred it closed, a third of that UPDATE's server time. The batch that closes
# an order now deletes its LiveOrder row itself (trading.batch_writer), in the same transaction.
live_orders = importlib.import_module("trading.migrations.0018_order_updates_hot")


def drop_done_trigger(apps, schema_editor):
    live_orders.run(schema_editor, {"postgresql": live_orders.POSTGRESQL_DROP[2:4],
                                    "sqlite": live_orders.SQLITE_DROP[1:]})


def create_done_trigger(apps, schema_editor):
    live_orders.run(schema_editor, {"postgresql": live_orders.POSTGRESQL_TRIGGERS[2:4],
                                    "sqlite": live_orders.SQLITE_TRIGGERS[1:]})


class Migration(migrations.Migration):

    dependencies = [
        ('trading', '0018_order_updates_hot'),
    ]

    operations = [
        migrations.RunPython(drop_done_trigger, create_done_trigger),
    ]

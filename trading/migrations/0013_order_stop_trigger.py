from django.db import migrations, models


def name_the_triggers_of_existing_stops(apps, schema_editor):
    """Stops placed before ``trigger`` existed triggered the side's way: a buy above, a sell below."""
    Order = apps.get_model("trading", "Order")
    for side, trigger in (("buy", "above"), ("sell", "below")):
        Order.objects.filter(type="stop", side=side).update(trigger=trigger)


class Migration(migrations.Migration):

    dependencies = [
        ('trading', '0012_ledger_index_by_account'),
    ]

    operations = [
        migrations.AddField(
            model_name='order',
            name='trigger',
            field=models.CharField(
                blank=True, choices=[('above', 'Above'), ('below', 'Below')], max_length=5, null=True,
                help_text='Stops only: above or below stop_price (null for other orders).'),
        ),
        migrations.RunPython(name_the_triggers_of_existing_stops, migrations.RunPython.noop),
    ]

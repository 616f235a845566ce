from django.db import migrations, models


def retail_is_the_volume_ladders_first_step(apps, schema_editor):
    """Retail (from 0) is assigned by volume, market maker stays manual: a tier an operator adds with a
    threshold then moves retail accounts up to it, and back when their volume falls."""
    apps.get_model("accounts", "RateTier").objects.filter(name="retail").update(min_30d_volume=0)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_interest_account'),
    ]

    operations = [
        migrations.AddField(
            model_name='ratetier',
            name='min_30d_volume',
            field=models.DecimalField(
                blank=True, decimal_places=2, max_digits=30, null=True, verbose_name='minimum 30-day volume',
                help_text='Assigned by volume: accounts whose 30-day volume (in the reference asset, '
                          'FEE_TIER_VOLUME_ASSET) reaches this are moved here by the daily job (manage.py '
                          'assign_fee_tiers). Empty: a manual tier, whose accounts the job never moves.'),
        ),
        migrations.AddConstraint(
            model_name='ratetier',
            constraint=models.CheckConstraint(condition=models.Q(('min_30d_volume__gte', 0)),
                                              name='rate_tier_min_volume_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='ratetier',
            constraint=models.UniqueConstraint(fields=('min_30d_volume',), name='rate_tier_min_volume_unique'),
        ),
        migrations.RunPython(retail_is_the_volume_ladders_first_step, migrations.RunPython.noop),
    ]

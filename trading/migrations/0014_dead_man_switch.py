# The dead-man's switch of POST /v1/orders/cancel-all-after (trading/deadman.py).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_interest_account'),
        ('trading', '0013_order_stop_trigger'),
    ]

    operations = [
        migrations.CreateModel(
            name='DeadManSwitch',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('timeout_ms', models.PositiveIntegerField(help_text='As last set; 0 disarmed it.')),
                ('trigger_at', models.DateTimeField(blank=True, help_text='When it fires; empty: disarmed.',
                                                    null=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('fired_at', models.DateTimeField(blank=True, help_text='When it last fired.', null=True)),
                ('account', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT,
                                              related_name='+', to='accounts.account')),
                ('market', models.ForeignKey(blank=True, db_index=False,
                                             help_text="Only this pair's orders; empty: every pair's.", null=True,
                                             on_delete=django.db.models.deletion.PROTECT, related_name='+',
                                             to='trading.market')),
            ],
            options={
                'indexes': [models.Index(condition=models.Q(('trigger_at__isnull', False)), fields=['trigger_at'],
                                         name='dead_man_switch_armed')],
                'constraints': [
                    models.UniqueConstraint(condition=models.Q(('market__isnull', False)), fields=('account', 'market'),
                                            name='dead_man_switch_unique_per_account_and_pair'),
                    models.UniqueConstraint(condition=models.Q(('market__isnull', True)), fields=('account',),
                                            name='dead_man_switch_unique_per_account'),
                ],
            },
        ),
    ]

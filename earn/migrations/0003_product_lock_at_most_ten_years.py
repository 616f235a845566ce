from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('earn', '0002_cut_longer_product_locks'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='earnproduct',
            constraint=models.CheckConstraint(condition=models.Q(('lock_days__lte', 3650)), name='earn_product_lock_at_most_ten_years'),
        ),
    ]

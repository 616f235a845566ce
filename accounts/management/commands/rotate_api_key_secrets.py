"""Re-encrypt every API key secret with the first key of API_KEY_ENCRYPTION_KEYS.

Rotation: put a new Fernet key in front of API_KEY_ENCRYPTION_KEYS, deploy, run this, then remove
the old key.
"""

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts import key_cache
from accounts.models import ApiKey
from accounts.secrets import reencrypt_secret


class Command(BaseCommand):
    help = "Re-encrypt every stored API key secret with the newest encryption key."

    @transaction.atomic
    def handle(self, *args, **options):
        keys = list(ApiKey.objects.select_for_update().only("pk", "secret_ciphertext"))
        for key in keys:
            key.secret_ciphertext = reencrypt_secret(key.secret_ciphertext)
        ApiKey.objects.bulk_update(keys, ["secret_ciphertext"], batch_size=500)
        key_cache.forget_all_keys()  # bulk_update sends no post_save
        self.stdout.write(f"Re-encrypted {len(keys)} API key secret(s).")

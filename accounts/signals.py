"""What accounts announces for later apps to act on, and its own upkeep of the key cache.

Saved keys, accounts, users and tiers are forgotten by the signed-request key cache
(accounts/key_cache.py): a safety net under every ORM save (admin forms and actions, services,
shells), since a cached key must never outlive a change to what its checks read. Creations change no
cached key.
"""

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from accounts import key_cache
from accounts.models import Account, ApiKey, RateTier

# A trading account was opened (accounts.services.open_account): ``account``. Sent inside the opening
# transaction, so that what a receiver writes (the sandbox's starting balance) commits with it or not at all.
account_opened = Signal()


@receiver(post_save, sender=ApiKey)
@receiver(post_delete, sender=ApiKey)
def forget_key(sender, instance: ApiKey, created: bool = False, **kwargs) -> None:
    if not created:
        key_cache.forget_keys([instance.public_id])


@receiver(post_save, sender=Account)
def forget_account_keys(sender, instance: Account, created: bool, **kwargs) -> None:
    if not created:
        key_cache.forget_accounts([instance.pk])


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def forget_user_keys(sender, instance, created: bool, update_fields=None, **kwargs) -> None:
    if not created and update_fields != frozenset({"last_login"}):  # not on every log-in
        key_cache.forget_users([instance.pk])


@receiver(post_save, sender=RateTier)
def forget_all_keys(sender, instance: RateTier, created: bool, **kwargs) -> None:
    if not created:
        key_cache.forget_all_keys()

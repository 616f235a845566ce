from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import Account, RateTier
from accounts.signals import account_opened

DEFAULT_TIER_NAME = "retail"


def default_rate_tier() -> RateTier:
    return RateTier.objects.get(name=DEFAULT_TIER_NAME)


@transaction.atomic
def open_account(user) -> Account:
    """The user's trading account, created on the retail tier the first time it is asked for
    (announced by ``account_opened``)."""
    account, created = Account.objects.get_or_create(user=user, defaults={"rate_tier": default_rate_tier()})
    if created:
        account_opened.send(sender=Account, account=account)
    return account


def account_of(user) -> Account | None:
    """The user's trading account; None for a user without one (an operator) or a visitor not logged in."""
    return getattr(user, "account", None)


def fee_account() -> Account:
    return Account.objects.get(kind=Account.Kind.FEE)


def interest_account() -> Account:
    """The account earn products pay interest from; operators fund its spot wallet."""
    return Account.objects.get(kind=Account.Kind.INTEREST)


def check_username(username: str, *, longest: int | None = None) -> None:
    """A username as sign-up takes it (Django's validator), of at most its column's length or ``longest``
    characters, for the operators' commands that make users; ValidationError saying what is wrong."""
    field = get_user_model()._meta.get_field(get_user_model().USERNAME_FIELD)
    limit = min(field.max_length, longest or field.max_length)
    if not 0 < len(username) <= limit:
        raise ValidationError(f"A username is 1 to {limit} characters, not {len(username)}.")
    field.run_validators(username)

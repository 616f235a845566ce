"""Password checks a guesser could repeat, limited: the log-in forms (the site's and the admin's), the
password asked again before a key may withdraw or an address joins the address book, and the current
password asked to change it (/account/password/, where the admin's own page leads).

Every attempt (right or wrong: a guesser's success is the rare one) counts against two budgets over the
rate limits' sliding minute (exchange/ratelimit.py, shared by every server process): the account name's,
against guessing one account's password from many addresses, and the client address's, against trying
one password on many accounts. Past either, the form says when to try again and no password is checked.
A name's budget is also one an attacker can spend for its holder, for at most a minute at a time: the
trade-off every lock-out makes, kept short. When the budgets' store is out (Redis down), attempts are not
limited: the pages keep working, as the API does.
"""

import hashlib

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm

from exchange.errors import OUTAGE_ERRORS, log_outage
from exchange.net import budget_address, client_address
from exchange.ratelimit import windows


def budgets(request, username: str) -> list[tuple[str, int]]:
    # The name hashed: any text of a form field, made a bounded key (names are case-insensitive to a guesser).
    name = hashlib.sha256(username.casefold().encode()).hexdigest()[:32]
    address = budget_address(client_address(request.META))
    # The address's first: an address past its attempts spends no name's (it could lock accounts out).
    return [(f"password-address:{address}", settings.PASSWORD_ATTEMPTS_PER_ADDRESS),
            (f"password-name:{name}", settings.PASSWORD_ATTEMPTS_PER_NAME)]


def take_password_attempt(request, username: str) -> None:
    """Count one attempt at ``username``'s password from the request's address, or raise the form error
    that says when the next may be made."""
    for bucket, limit in budgets(request, username):
        try:
            decision = windows().charge(bucket, limit, 1)
        except OUTAGE_ERRORS as exc:
            log_outage("password attempts", exc)
            return
        if not decision.allowed:
            raise forms.ValidationError(
                "Too many password attempts for this account or from your address: try again in %(seconds)s s.",
                code="password_attempts", params={"seconds": decision.retry_after})


def password_is_right(request, user, password: str) -> bool:
    """``user.check_password``, as one limited attempt (a ValidationError when there have been too many)."""
    take_password_attempt(request, user.get_username())
    return user.check_password(password)


class LimitedAttempts:
    """For an AuthenticationForm: the attempt is counted before the password is checked."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username and password:
            take_password_attempt(self.request, username)
        return super().clean()


class LogInForm(LimitedAttempts, AuthenticationForm):
    pass


class AdminLogInForm(LimitedAttempts, AdminAuthenticationForm):
    pass


class LimitedPasswordChangeForm(PasswordChangeForm):
    """Django's, the current password checked as one limited attempt."""

    def __init__(self, user, *args, request, **kwargs):
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self) -> str:
        old_password = self.cleaned_data["old_password"]
        if not password_is_right(self.request, self.user, old_password):
            raise forms.ValidationError(self.error_messages["password_incorrect"], code="password_incorrect")
        return old_password

"""Forms of the account settings pages. They only parse input: the key services in accounts/keys.py
decide what is valid, and their field errors are put back onto these forms (``add_exchange_error``)."""

import re

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.utils.html import format_html

from accounts.models import ApiKey
from accounts.passwords import password_is_right
from exchange.errors import ExchangeError, InvalidFields
from exchange.fields import has_control_character

SCOPE_HELP = {
    ApiKey.Scope.READ_ONLY: "GET endpoints only: balances, orders, fills. Cannot place or cancel orders.",
    ApiKey.Scope.TRADE: "Read, plus place and cancel orders. Cannot move funds off the exchange.",
    ApiKey.Scope.TRADE_WITHDRAW: (
        "Trade, plus withdrawals. Needs an IP allowlist, and your password to create or change."
    ),
}


# Bidirectional overrides and isolates: they reorder the text shown after them (the key list, the admin's history).
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def refuse_invisible_characters(text: str) -> None:
    """A label is shown back to people: no control character, and nothing that reorders what follows it."""
    if has_control_character(text) or BIDI_CONTROLS.search(text):
        raise forms.ValidationError("No control or text-direction characters.")


# The sandbox's own users (its demo account and simulated traders, sandbox.simulation.TRADERS), which its
# commands fund and trade with: a person never signs up as one.
RESERVED_USERNAMES = re.compile(r"demo|sim-.*", re.IGNORECASE)


class SignUpForm(UserCreationForm):
    """Username, email and the password twice, checked by AUTH_PASSWORD_VALIDATORS."""

    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_username(self):
        username = super().clean_username()
        if RESERVED_USERNAMES.fullmatch(username):
            raise forms.ValidationError("This username is reserved; choose another.")
        return username


class ApiKeyForm(forms.Form):
    """Create or change a key. The password is asked again whenever the key will be able to withdraw."""

    label = forms.CharField(max_length=80, validators=[refuse_invisible_characters],
                            help_text="A name for you, e.g. the bot that uses the key.")
    scope = forms.ChoiceField(
        choices=[
            (scope.value, format_html("<strong>{}</strong> <code>{}</code><br><small>{}</small>",
                                      scope.label, scope.value, SCOPE_HELP[scope]))
            for scope in ApiKey.Scope
        ],
        initial=ApiKey.Scope.READ_ONLY,
        widget=forms.RadioSelect(attrs={"class": "scope"}),
    )
    ip_allowlist = forms.CharField(
        label="IP allowlist",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "203.0.113.7\n198.51.100.0/24\n2001:db8::/32",
                                     "spellcheck": "false"}),
        help_text="One IPv4/IPv6 address or CIDR range per line. Empty: any address (not allowed for withdrawals).",
    )
    drift_tolerance_ms = forms.IntegerField(
        label="Clock drift tolerance (ms)",
        min_value=ApiKey.MIN_DRIFT_MS,
        max_value=ApiKey.MAX_DRIFT_MS,
        initial=ApiKey.DEFAULT_DRIFT_MS,
        help_text="How far X-Api-Timestamp may be from server time, "
                  f"{ApiKey.MIN_DRIFT_MS:,} to {ApiKey.MAX_DRIFT_MS:,} ms.",
    )
    password = forms.CharField(
        label="Your password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Only for “Trade and withdraw”: confirms it is really you.",
    )

    def __init__(self, *args, request, **kwargs):
        self.request = request
        super().__init__(*args, **kwargs)

    @classmethod
    def initial_for(cls, key: ApiKey) -> dict:
        return {"label": key.label, "scope": key.scope, "ip_allowlist": "\n".join(key.ip_allowlist),
                "drift_tolerance_ms": key.drift_tolerance_ms}

    def clean_ip_allowlist(self) -> list[str]:
        # Entries are checked by the key service; here the text only becomes a list.
        return [entry for entry in re.split(r"[\s,]+", self.cleaned_data["ip_allowlist"]) if entry]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("scope") == ApiKey.Scope.TRADE_WITHDRAW:
            password = cleaned.get("password")
            if not password:
                self.add_error("password", "Enter your password to give a key the right to withdraw.")
            else:
                try:
                    if not password_is_right(self.request, self.request.user, password):
                        self.add_error("password", "That is not your password.")
                except forms.ValidationError as error:
                    self.add_error("password", error)
        return cleaned

    def service_arguments(self) -> dict:
        return {name: self.cleaned_data[name] for name in ("label", "scope", "ip_allowlist", "drift_tolerance_ms")}

    def add_exchange_error(self, error: ExchangeError) -> None:
        """A service's refusal, shown where it belongs: on its fields, else at the top of the form."""
        fields = error.fields if isinstance(error, InvalidFields) else {}
        for field, messages in fields.items():
            messages = messages if isinstance(messages, list | tuple) else [messages]
            for message in messages:
                self.add_error(field if field in self.fields else None, str(message))
        if not fields:
            self.add_error(None, error.message)

"""Make the sandbox's demo account (idempotently: one account, one trade key, funded once with the
starting balance) and print its key, its secret and the key page's quick start for this server. What
`make run` shows in the sandbox; demo only, since a real key's secret is never printed again.

    python manage.py sandbox_demo --server http://127.0.0.1:8000
"""

import html
import re
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.template.loader import render_to_string

from accounts.keys import create_api_key
from accounts.models import ApiKey
from accounts.secrets import decrypt_secret
from accounts.services import open_account
from sandbox.services import in_sandbox

DEMO_USER = "demo"
DEMO_KEY_LABEL = "demo key (printed by make run)"
QUICK_START = re.compile(r'<pre id="quickstart">(.*?)</pre>', re.DOTALL)


def quick_start(key: ApiKey, secret: str, server: str) -> str:
    """The key-created page's curl quick start, exactly as that page prints it for this key and server."""
    page = render_to_string("accounts/key_created.html", {"key": key, "secret": secret, "server": server})
    return html.unescape(QUICK_START.search(page).group(1))


class Command(BaseCommand):
    help = "Create the sandbox's funded demo account and key; print them with a quick start for this server."

    def add_arguments(self, parser):
        parser.add_argument("--server", default="http://127.0.0.1:8000", help="The address the quick start calls.")

    @transaction.atomic
    def handle(self, *args, server: str, **options):
        if not in_sandbox():
            raise CommandError("The demo account is made in the sandbox only (EXCHANGE_ENVIRONMENT=sandbox).")
        user, _ = get_user_model().objects.get_or_create(username=DEMO_USER)
        account = open_account(user)  # opened in the sandbox: it starts with SANDBOX_STARTING_BALANCES
        key = ApiKey.objects.filter(account=account, label=DEMO_KEY_LABEL, revoked_at__isnull=True).first()
        if key is None:
            key, secret = create_api_key(account, label=DEMO_KEY_LABEL, scope=ApiKey.Scope.TRADE, ip_allowlist=[])
        else:
            secret = decrypt_secret(key.secret_ciphertext)
        self.stdout.write(self.style.SUCCESS(
            f"Sandbox demo account {DEMO_USER!r}, funded with testnet money, and its trade key. The secret is "
            "printed at every start because this is a demo: a real key's secret is shown once, on the key page."
        ))
        self.stdout.write("Quick start (paste into bash; hkt-sign is in the project's .venv/bin):\n")
        self.stdout.write(f'export PATH="{Path(sys.executable).parent}:$PATH"')
        self.stdout.write(quick_start(key, secret, server) + "\n")

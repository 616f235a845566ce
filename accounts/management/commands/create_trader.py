"""Create a trading account with deposits and an API key, printing the key as JSON (for local bots and tests)
or as shell exports. Each run credits its deposits and makes a key, again for a username that has them.

    python manage.py create_trader alice --deposit USD=100000 --deposit BTC=10 --scope trade
    eval "$(python manage.py create_trader alice --deposit USD=100000 --format env)"   # sets HKT_KEY, HKT_SECRET

Its deposits come from nowhere, so it runs in the sandbox (EXCHANGE_ENVIRONMENT=sandbox) unless told
``--outside-sandbox`` (a test's production stack): on a real exchange an operator credits an account
through the admin's ledger adjustment, which records who did it and why.
"""

import json
import shlex

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.keys import create_api_key
from accounts.models import ApiKey
from accounts.services import check_username, open_account
from exchange.errors import ExchangeError
from trading.ledger import REFERENCE_LENGTH, adjust_balance
from trading.models import Asset
from wallets.management.commands.credit_deposit import parse_amount


def refused(call, *args, **kwargs):
    """``call``'s result; its refusal (a bad allowlist entry, a balance past what the ledger holds)
    as the command's error, with what the API would say (nothing is written: handle is one transaction)."""
    try:
        return call(*args, **kwargs)
    except ExchangeError as error:
        raise CommandError(f"{error.message} {json.dumps(error.details)}") from None


class Command(BaseCommand):
    help = "Create a user with a trading account, deposits (through the ledger) and an API key."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--deposit", action="append", default=[], help="ASSET=AMOUNT, repeatable")
        parser.add_argument("--scope", default=ApiKey.Scope.TRADE, choices=ApiKey.Scope.values)
        parser.add_argument("--allow", action="append", default=[], help="IP allowlist entry, repeatable")
        parser.add_argument("--verified", action="store_true")
        parser.add_argument("--outside-sandbox", action="store_true",
                            help="run with EXCHANGE_ENVIRONMENT=production too (a test stack's; its deposits come "
                                 "from nowhere)")
        parser.add_argument("--format", dest="output", choices=["json", "env"], default="json",
                            help="json: account_id, key and secret; env: export HKT_KEY=... and HKT_SECRET=... lines")

    @transaction.atomic
    def handle(self, *args, username, deposit, scope, allow, verified, output, outside_sandbox, **options):
        if settings.EXCHANGE_ENVIRONMENT != "sandbox" and not outside_sandbox:
            raise CommandError("create_trader credits money from nowhere: it runs in the sandbox "
                               "(EXCHANGE_ENVIRONMENT=sandbox). Fund a real account through the admin's ledger "
                               "adjustment; --outside-sandbox is for test stacks.")
        try:  # the key's label and the deposits' ledger reference hold it too
            check_username(username, longest=min(ApiKey._meta.get_field("label").max_length - len(" cli"),
                                                 REFERENCE_LENGTH - len("cli:")))
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        user, _ = get_user_model().objects.get_or_create(username=username)
        account = open_account(user)
        if verified:
            account.verified = True
            account.save(update_fields=["verified"])
        for item in deposit:
            symbol, _, text = item.partition("=")
            asset = Asset.objects.filter(symbol=symbol.upper()).first()
            if asset is None or not text:
                raise CommandError(f"--deposit takes ASSET=AMOUNT with a known asset, not {item!r}")
            if (amount := parse_amount(text)) <= 0:
                raise CommandError(f"--deposit takes an amount greater than zero, not {item!r}")
            if amount.normalize().as_tuple().exponent < -asset.precision:  # as deposits are checked
                raise CommandError(f"--deposit: {asset.symbol} has {asset.precision} decimal places, not {item!r}")
            refused(adjust_balance, account_id=account.pk, asset_id=asset.pk, amount=amount,
                    reference=f"cli:{username}", memo="create_trader deposit")
        key, secret = refused(create_api_key, account, label=f"{username} cli", scope=scope, ip_allowlist=allow)
        if output == "env":
            self.stdout.write(f"export HKT_KEY={shlex.quote(key.public_id)}\nexport HKT_SECRET={shlex.quote(secret)}")
        else:
            self.stdout.write(json.dumps({"account_id": account.pk, "key": key.public_id, "secret": secret}))

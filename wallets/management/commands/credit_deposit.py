import json
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Account
from exchange.fields import PLAIN_INTEGER, SIGNED_PLAIN_DECIMAL
from trading.models import Asset
from wallets.api.deposits import DepositSerializer
from wallets.deposits import DepositRefused, credit_deposit


def find_account(reference: str) -> Account:
    """The account ``reference`` names: its id or its holder's username, refused when it is both of two
    accounts' (a username of digits)."""
    by_id = Account.objects.filter(pk=int(reference)).first() if PLAIN_INTEGER.fullmatch(reference) else None
    by_username = Account.objects.filter(user__username=reference).first()
    if by_id is not None and by_username is not None and by_id != by_username:
        raise CommandError(f"{reference!r} is account {by_id.pk}'s id and account {by_username.pk}'s username: "
                           f"give {by_username.pk} for the holder called {reference!r}.")
    account = by_id or by_username
    if account is None:
        raise CommandError(f"No account {reference!r} (give its id or its holder's username).")
    return account


def find_asset(symbol: str) -> Asset:
    asset = Asset.objects.filter(symbol=symbol).first()
    if asset is None:
        raise CommandError(f"Unknown asset {symbol!r}.")
    return asset


def parse_amount(text: str) -> Decimal:
    if not SIGNED_PLAIN_DECIMAL.fullmatch(text):  # Decimal() also takes "1_000", "1e3" and other scripts' digits
        raise CommandError(f"The amount must be a plain decimal such as 0.5, not {text!r}.")
    return Decimal(text)


class Command(BaseCommand):
    help = ("Credit a deposit from the outside world to an account's spot wallet (for a custody system's "
            "script) and print it as JSON. A transaction already credited exits non-zero and writes nothing.")

    def add_arguments(self, parser):
        parser.add_argument("account", help="The account's id or its holder's username.")
        parser.add_argument("asset", help="The asset's symbol, e.g. BTC.")
        parser.add_argument("amount", help="A plain positive decimal, e.g. 0.5.")
        parser.add_argument("external_id", help="The transaction id on the asset's network (unique per asset).")
        parser.add_argument("--credited-by", default="credit_deposit", help="Who credits it, kept on the deposit.")

    def handle(self, *args, account, asset, amount, external_id, credited_by, **options):
        try:
            deposit = credit_deposit(find_account(account), find_asset(asset), parse_amount(amount), external_id,
                                     credited_by=credited_by)
        except DepositRefused as refusal:
            raise CommandError(str(refusal)) from None
        self.stdout.write(json.dumps({"account": deposit.account_id, "credited_by": deposit.credited_by,
                                      **DepositSerializer(deposit).data}))

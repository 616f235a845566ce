import json

from django.core.management.base import BaseCommand, CommandError

from accounts.services import interest_account
from exchange.errors import ExchangeError
from trading import ledger
from trading.models import Balance, Wallet
from wallets.deposits import DepositRefused, check_amount
from wallets.management.commands.credit_deposit import find_asset, parse_amount


class Command(BaseCommand):
    help = ("Credit the interest account's spot wallet, which earn products pay interest from, from the outside "
            "world (a ledger adjustment, reference interest_funding:<by>); prints its balance as JSON.")

    def add_arguments(self, parser):
        parser.add_argument("asset", help="The asset's symbol, e.g. BTC.")
        parser.add_argument("amount", help="A plain positive decimal, e.g. 0.5.")
        parser.add_argument("--memo", required=True, help="Why, kept on the ledger entries.")
        parser.add_argument("--by", default="fund_interest_account", help="Who funds it, kept in the reference.")

    def handle(self, *args, asset, amount, memo, by, **options):
        asset, amount, account = find_asset(asset), parse_amount(amount), interest_account()
        prefix = "interest_funding:"
        if len(prefix + by) > ledger.REFERENCE_LENGTH:
            raise CommandError(f"--by takes at most {ledger.REFERENCE_LENGTH - len(prefix)} characters.")
        if not memo.strip() or len(memo) > ledger.MEMO_LENGTH:
            raise CommandError(f"--memo says why, in 1 to {ledger.MEMO_LENGTH} characters.")
        try:
            check_amount(asset, amount)
            ledger.adjust_balance(account_id=account.pk, asset_id=asset.pk, amount=amount, reference=prefix + by,
                                  memo=memo)
        except DepositRefused as refusal:
            raise CommandError(str(refusal)) from None
        except ExchangeError as error:  # the balance would pass what the ledger holds
            raise CommandError(error.message) from None
        balance = Balance.objects.get(account=account, asset=asset, wallet=Wallet.SPOT)
        self.stdout.write(json.dumps({"asset": asset.symbol, "available": format(balance.available.normalize(), "f")}))

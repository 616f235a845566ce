"""The account holder's balances page (``/account/wallets/``: each wallet's balance of each asset,
available and locked) and their recent ledger (``/account/wallets/ledger/``), each entry with the
balance after it: the same numbers, formatted the same way, as ``GET /v1/account/balances`` and
``GET /v1/account/ledger``."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_safe

from accounts.services import account_of
from trading.api.serializers import BalancesSerializer
from trading.models import Wallet
from trading.services import account_balances
from wallets import statements
from wallets.api.ledger import LedgerEntrySerializer

RECENT_ENTRIES = 100  # the page's; the API pages back through the rest


@login_required
@require_safe
def balances(request):
    account = account_of(request.user)
    assets = BalancesSerializer({"balances": account_balances(account)}).data["balances"] if account else []
    wallets = [(wallet, [(balance["asset"], balance[wallet]) for balance in assets]) for wallet in Wallet.values]
    return render(request, "wallets/balances.html", {"wallets": wallets, "has_account": account is not None})


@login_required
@require_safe
def ledger(request):
    account = account_of(request.user)
    entries = statements.recent_entries(account, RECENT_ENTRIES) if account else []
    return render(request, "wallets/ledger.html", {
        "entries": zip(entries, LedgerEntrySerializer(entries, many=True).data),
        "has_account": account is not None,
        "limit": RECENT_ENTRIES,
    })

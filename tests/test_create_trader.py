"""manage.py create_trader: an account funded through the ledger and a key, printed as JSON or as shell exports."""

import json
import os
import subprocess
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey
from trading.models import Balance, LedgerEntry

from .signing import SignedClient


def create_trader(*args: str) -> str:
    """The command as a test stack runs it, on the production settings of the tests."""
    out = StringIO()
    call_command("create_trader", *args, "--outside-sandbox", stdout=out)
    return out.getvalue()


def test_json_names_the_account_key_and_secret_that_sign(markets):
    printed = json.loads(create_trader("alice", "--deposit", "USD=1000", "--deposit", "btc=0.5"))

    key = ApiKey.objects.get(public_id=printed["key"])
    assert key.account_id == printed["account_id"] and key.scope == "trade"
    assert {(row.asset.symbol, row.available) for row in Balance.objects.filter(account_id=printed["account_id"])} >= {
        ("USD", Decimal(1000)), ("BTC", Decimal("0.5"))}
    assert LedgerEntry.objects.filter(account_id=printed["account_id"]).count() == 2
    assert SignedClient(printed["key"], printed["secret"]).get("/v1/account/balances").status_code == 200


def test_env_prints_exports_a_shell_takes(markets):
    printed = create_trader("bob", "--deposit", "USD=10", "--format", "env")

    exported = subprocess.run(["bash", "-c", f'{printed}\nprintf "%s %s" "$HKT_KEY" "$HKT_SECRET"'],
                              capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
    key_id, secret = exported.split()
    assert printed.splitlines() == [f"export HKT_KEY={key_id}", f"export HKT_SECRET={secret}"]
    assert ApiKey.objects.get(public_id=key_id).account.user.username == "bob"
    assert SignedClient(key_id, secret).get("/v1/account/balances").status_code == 200


def test_unknown_asset_creates_nothing(markets):
    with pytest.raises(CommandError, match="DOGE=5"):
        create_trader("carol", "--deposit", "DOGE=5", "--format", "env")

    assert not ApiKey.objects.exists() and not LedgerEntry.objects.filter(account__user__username="carol").exists()


@pytest.mark.parametrize("args,message", [
    (["--deposit", "USD=abc"], "plain decimal"),
    (["--deposit", "USD=1.5e3"], "plain decimal"),
    (["--deposit", "USD=1_000"], "plain decimal"),
    (["--deposit", "USD=-5"], "greater than zero"),
    (["--deposit", "USD=0.001"], "USD has 2 decimal places"),
    (["--allow", "not-an-ip"], "ip_allowlist"),
])
def test_bad_arguments_are_the_commands_errors_and_create_nothing(markets, args, message):
    with pytest.raises(CommandError, match=message):
        create_trader("zed", *args)

    assert not ApiKey.objects.exists() and not LedgerEntry.objects.filter(account__user__username="zed").exists()


@pytest.mark.parametrize("username,message", [
    ("a" * 77, "1 to 76 characters, not 77"),  # the key's label and the ledger reference hold it too
    ("", "1 to 76 characters, not 0"),
    ("bad name!", "Enter a valid username"),
])
def test_a_username_sign_up_would_refuse_is_refused_and_nothing_made(markets, username, message):
    from django.contrib.auth import get_user_model

    with pytest.raises(CommandError, match=message):
        create_trader(username, "--deposit", "USD=5")
    with pytest.raises(CommandError, match="--operator: A username is 1 to 150 characters, not 151"):
        call_command("seed_demo", "--operator", "o" * 151, stdout=StringIO())

    assert not get_user_model().objects.exists() and not LedgerEntry.objects.exists()
    assert json.loads(create_trader("a" * 76, "--deposit", "USD=5"))["key"]


def test_outside_the_sandbox_it_runs_only_when_told(markets, settings):
    settings.EXCHANGE_ENVIRONMENT = "production"
    with pytest.raises(CommandError, match="runs in the sandbox"):
        call_command("create_trader", "mallory", "--deposit", "USD=1000000", stdout=StringIO())

    assert not ApiKey.objects.exists() and not LedgerEntry.objects.filter(account__user__username="mallory").exists()
    settings.EXCHANGE_ENVIRONMENT = "sandbox"
    out = StringIO()
    call_command("create_trader", "sandy", "--deposit", "USD=10", stdout=out)
    assert ApiKey.objects.get(public_id=json.loads(out.getvalue())["key"]).public_id.startswith("hkt_test_")

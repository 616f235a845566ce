"""Password attempts are limited per account name and per client address (accounts/passwords.py): on the
log-in page, the admin's, and wherever the password is asked again."""

import time

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client

from accounts import passwords
from accounts.models import ApiKey
from accounts.services import open_account
from wallets.models import WithdrawalAddress

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-passw0rd!"
LOGIN, ADMIN_LOGIN = "/account/login/", "/admin/login/?next=/admin/"
TOO_MANY = "Too many password attempts"


@pytest.fixture(autouse=True)
def quick_hashes(settings):
    """What is limited is the attempts, whatever the hash: a cheap one keeps the many log-ins here quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def holder(db):
    user = get_user_model().objects.create_user("u", password=PASSWORD)
    return open_account(user)


def log_in(client, username="u", password=PASSWORD, path=LOGIN):
    return client.post(path, {"username": username, "password": password})


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_past_a_names_attempts_even_the_right_password_waits_for_the_window_from_any_address(holder, settings):
    settings.PASSWORD_ATTEMPTS_PER_NAME = 3
    settings.RATE_LIMIT_WINDOW_SECONDS = 3
    guesser = Client(REMOTE_ADDR="203.0.113.5")
    for _ in range(3):
        assert TOO_MANY not in log_in(guesser, password="guess").content.decode()

    holder_client = Client(REMOTE_ADDR="198.51.100.9")
    refused = log_in(holder_client)

    assert refused.status_code == 200 and not logged_in(holder_client)
    assert TOO_MANY in refused.content.decode()
    assert TOO_MANY in log_in(guesser, username="U").content.decode()  # the name's budget, in any case
    time.sleep(3.1)
    assert log_in(holder_client).status_code == 302 and logged_in(holder_client)


def test_one_address_trying_many_names_is_refused_past_its_attempts(holder, settings):
    settings.PASSWORD_ATTEMPTS_PER_ADDRESS = 4
    guesser = Client(REMOTE_ADDR="203.0.113.5")
    for n in range(4):
        assert TOO_MANY not in log_in(guesser, username=f"name{n}").content.decode()

    refused = log_in(guesser)
    elsewhere = Client(REMOTE_ADDR="203.0.113.6")

    assert TOO_MANY in refused.content.decode() and not logged_in(guesser)
    assert log_in(elsewhere).status_code == 302 and logged_in(elsewhere)


def test_an_address_past_its_attempts_spends_no_names_attempts(holder, settings):
    settings.PASSWORD_ATTEMPTS_PER_ADDRESS = 2
    settings.PASSWORD_ATTEMPTS_PER_NAME = 3
    guesser = Client(REMOTE_ADDR="203.0.113.5")
    for n in range(2):
        log_in(guesser, username=f"name{n}")
    for _ in range(5):  # refused by its address's budget: the holder's name is not charged for them
        assert TOO_MANY in log_in(guesser, password="guess").content.decode()

    holder_client = Client(REMOTE_ADDR="198.51.100.9")
    assert log_in(holder_client).status_code == 302 and logged_in(holder_client)


def test_the_admins_log_in_is_limited_too(db, settings):
    get_user_model().objects.create_superuser("operator", password=PASSWORD)
    settings.PASSWORD_ATTEMPTS_PER_NAME = 2
    client = Client()
    for _ in range(2):
        assert TOO_MANY not in log_in(client, "operator", "guess", ADMIN_LOGIN).content.decode()

    refused = log_in(client, "operator", PASSWORD, ADMIN_LOGIN)

    assert refused.status_code == 200 and TOO_MANY in refused.content.decode() and not logged_in(client)


def test_the_password_asked_again_spends_the_same_attempts(holder, settings):
    settings.PASSWORD_ATTEMPTS_PER_NAME = 2
    client = Client()
    client.force_login(holder.user)
    withdrawing_key = {"label": "bot", "scope": "trade_withdraw", "ip_allowlist": "198.51.100.0/24",
                       "drift_tolerance_ms": "5000"}
    address = {"asset": "BTC", "address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "label": "cold"}

    wrong = client.post("/account/keys/new/", {**withdrawing_key, "password": "guess"})
    assert wrong.context["form"].errors["password"] == ["That is not your password."]
    wrong = client.post("/account/wallets/addresses/new/", {**address, "password": "guess"})
    assert wrong.context["form"].errors["password"] == ["That is not your password."]

    for path, fields in (("/account/keys/new/", withdrawing_key), ("/account/wallets/addresses/new/", address)):
        refused = client.post(path, {**fields, "password": PASSWORD})
        [error] = refused.context["form"].errors["password"]
        assert error.startswith(TOO_MANY), path
    assert not ApiKey.objects.exists() and not WithdrawalAddress.objects.exists()


def test_attempts_are_not_limited_while_their_store_is_out(holder, settings, monkeypatch):
    class Unreachable:
        def charge(self, bucket, limit, cost):
            raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(passwords, "windows", Unreachable)
    settings.PASSWORD_ATTEMPTS_PER_NAME = 1
    client = Client()
    for _ in range(3):
        assert TOO_MANY not in log_in(client, password="guess").content.decode()

    assert log_in(client).status_code == 302 and logged_in(client)


NEW_PASSWORD = "another-l0ng-passphrase"
CHANGE = "/account/password/"


def change(client, old, new=NEW_PASSWORD):
    return client.post(CHANGE, {"old_password": old, "new_password1": new, "new_password2": new})


def test_changing_the_password_keeps_this_session_and_signs_out_the_others(holder):
    here, elsewhere = Client(), Client()
    for client in (here, elsewhere):
        assert log_in(client).status_code == 302
    assert Client().get(CHANGE)["Location"].startswith("/account/login/")

    wrong = change(here, "guess")
    changed = change(here, PASSWORD)

    assert wrong.status_code == 200 and wrong.context["form"].errors["old_password"]
    assert changed.status_code == 302 and changed["Location"] == "/account/"
    assert here.get("/account/keys/").status_code == 200
    assert elsewhere.get("/account/keys/").status_code == 302  # to the log-in page
    assert log_in(Client(), password=NEW_PASSWORD).status_code == 302
    assert log_in(Client()).status_code == 200


def test_the_admins_password_change_is_the_limited_one(db):
    operator = Client()
    operator.force_login(get_user_model().objects.create_superuser("operator"))

    assert operator.get("/admin/password_change/")["Location"] == CHANGE


def test_the_current_password_asked_to_change_it_spends_the_attempts(holder, settings):
    settings.PASSWORD_ATTEMPTS_PER_NAME = 1
    client = Client()
    client.force_login(holder.user)
    change(client, "guess")

    refused = change(client, PASSWORD)

    [error] = refused.context["form"].errors["old_password"]
    assert error.startswith(TOO_MANY)
    holder.user.refresh_from_db()
    assert holder.user.check_password(PASSWORD)

"""The pages answer HEAD as they answer GET, with no body (link checkers and uptime monitors ask so),
except the one that shows a new key's secret once: a HEAD there would spend the showing."""

import pytest
from django.test import Client

from .test_key_pages import NEW_KEY, SECRET_SHOWN, key_fields

PAGES = [
    "/", "/markets/BTC-USD", "/account/", "/account/keys/", "/account/keys/new/", "/account/wallets/",
    "/account/wallets/ledger/", "/account/wallets/addresses/", "/account/wallets/addresses/new/",
    "/account/wallets/withdrawals/", "/account/earn/",
]


@pytest.fixture
def signed_in(markets, make_account):
    client = Client()
    client.force_login(make_account("holder").user)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_a_page_answers_head_as_it_answers_get(signed_in, path):
    got, head = signed_in.get(path), signed_in.head(path)

    assert got.status_code == 200 and got.content
    assert head.status_code == 200 and head.content == b""
    assert head["Content-Type"] == got["Content-Type"]


def test_head_is_refused_where_a_keys_secret_is_shown_once_and_leaves_the_showing(signed_in):
    created = signed_in.post(NEW_KEY, key_fields())
    assert created.status_code == 302

    head = signed_in.head(created["Location"])
    shown = signed_in.get(created["Location"])

    assert head.status_code == 405 and head["Allow"] == "GET"
    assert shown.status_code == 200 and SECRET_SHOWN.search(shown.content.decode())

"""The account settings pages where account holders sign up and manage their API keys."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.keys import create_api_key, revoke_api_keys
from accounts.models import Account, ApiKey
from accounts.services import open_account
from exchange.errors import InvalidRequest
from trading.models import Order

from .racing import race
from .signing import SignedClient

PASSWORD = "a-long-passw0rd!"
SECRET_SHOWN = re.compile(r'<code id="secret">([0-9a-f]{64})</code>')
KEYS, NEW_KEY = "/account/keys/", "/account/keys/new/"


def edit_url(key) -> str:
    return f"/account/keys/{key.pk}/edit/"


def revoke_url(key) -> str:
    return f"/account/keys/{key.pk}/revoke/"


def key_fields(**overrides) -> dict:
    return {"label": "my bot", "scope": "trade", "ip_allowlist": "", "drift_tolerance_ms": "5000", **overrides}


@pytest.fixture
def holder(make_account):
    """A logged-in account holder without a password (hashing one is slow): for pages that never ask for it."""
    account = make_account("holder")
    client = Client()
    client.force_login(account.user)
    return account, client


@pytest.fixture
def holder_with_password(db):
    """A user who signs in with a password, as the trade_withdraw pages ask for it again."""
    user = get_user_model().objects.create_user("u", password=PASSWORD)
    client = Client()
    assert client.login(username="u", password=PASSWORD)
    return open_account(user), client


def created_url(key) -> str:
    return f"/account/keys/{key.pk}/created/"


def create_key_through_the_page(client, **fields) -> tuple[ApiKey, str]:
    response = client.post(NEW_KEY, key_fields(**fields), follow=True)
    assert response.status_code == 200, response.content
    secret = SECRET_SHOWN.search(response.content.decode()).group(1)
    return ApiKey.objects.get(label=fields.get("label", "my bot")), secret


def form_errors(response, field) -> list[str]:
    return response.context["form"].errors.get(field, [])


def test_sign_up_opens_an_account_and_logs_in(db):
    client = Client()

    response = client.post("/account/signup/", {"username": "satoshi", "email": "s@example.com",
                                                 "password1": PASSWORD, "password2": PASSWORD})

    assert response.status_code == 302 and response["Location"] == KEYS
    user = get_user_model().objects.get(username="satoshi")
    assert user.email == "s@example.com" and user.check_password(PASSWORD)
    assert Account.objects.get(user=user).kind == Account.Kind.USER
    page = client.get(KEYS)
    assert page.status_code == 200
    assert page.context["user"] == user
    assert b"satoshi" in page.content


def test_sign_up_refuses_weak_or_mismatched_passwords(db):
    client = Client()

    weak = client.post("/account/signup/", {"username": "bob", "email": "b@example.com",
                                            "password1": "12345678", "password2": "12345678"})
    mismatched = client.post("/account/signup/", {"username": "bob", "email": "b@example.com",
                                                  "password1": PASSWORD, "password2": PASSWORD + "x"})

    assert weak.status_code == mismatched.status_code == 200
    assert form_errors(weak, "password2") and form_errors(mismatched, "password2")
    assert not get_user_model().objects.filter(username="bob").exists()
    assert "_auth_user_id" not in client.session


def test_sign_up_refuses_the_names_of_the_sandboxs_own_users(db):
    from sandbox.management.commands.sandbox_demo import DEMO_USER
    from sandbox.simulation import TRADERS

    client = Client()
    answers = {name: client.post("/account/signup/", {"username": name, "email": "x@example.com",
                                                      "password1": PASSWORD, "password2": PASSWORD})
               for name in (DEMO_USER, "Demo", *TRADERS, "SIM-maker-9")}

    assert {name: form_errors(response, "username") for name, response in answers.items()} == {
        name: ["This username is reserved; choose another."] for name in answers}
    assert not get_user_model().objects.exists()
    assert client.post("/account/signup/", {"username": "simone", "email": "x@example.com", "password1": PASSWORD,
                                            "password2": PASSWORD}).status_code == 302


def test_log_in_and_log_out(holder_with_password):
    account, _ = holder_with_password
    client = Client()

    wrong = client.post("/account/login/", {"username": "u", "password": "nope"})
    right = client.post("/account/login/", {"username": "u", "password": PASSWORD})

    assert wrong.status_code == 200 and "_auth_user_id" not in wrong.wsgi_request.session
    assert right.status_code == 302 and right["Location"] == KEYS
    assert client.get(KEYS).status_code == 200
    assert client.get("/account/logout/").status_code == 405  # logging out changes state: POST only
    assert client.post("/account/logout/").status_code == 302
    assert client.get(KEYS).status_code == 302


@pytest.mark.parametrize("next_", ["/account/login/", "/account/login/?next=/account/keys/", "/account/keys/new/"])
def test_a_signed_in_holder_sent_to_log_in_goes_on_and_never_in_a_loop(holder, next_):
    """A link anyone can send: ``next`` naming the log-in page itself must not answer 500 (Django's loop check)."""
    _, client = holder
    client.raise_request_exception = False

    response = client.get(f"/account/login/?next={next_}")

    assert response.status_code == 302
    assert response["Location"] == (KEYS if next_.startswith("/account/login/") else next_)


def test_secret_is_shown_exactly_once(holder, markets):  # markets: the market page at / lists some
    account, client = holder

    posted = client.post(NEW_KEY, key_fields(ip_allowlist="127.0.0.1\n10.0.0.0/8"))
    key = ApiKey.objects.get()
    response = client.get(posted["Location"])

    # POST-redirect-GET: the POST answers with a redirect only, the GET after it shows the secret.
    assert posted.status_code == 302 and posted["Location"] == created_url(key) and not posted.content
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = SECRET_SHOWN.search(response.content.decode()).group(1)
    assert key.account == account and key.scope == "trade" and key.ip_allowlist == ["127.0.0.1/32", "10.0.0.0/8"]
    # The quick start is ready to paste against this server.
    page = response.content.decode()
    assert f"export HKT_KEY={key.public_id}" in page and f"export HKT_SECRET={secret}" in page
    assert 'curl -X POST http://testserver/v1/orders -H "X-Api-Key: $HKT_KEY"' in page
    assert '-H "X-Api-Signature: $(hkt-sign POST /v1/orders "$BODY" $TS $NONCE)"' in page
    assert '<script src="/static/accounts/copy.js"></script>' in page and 'data-copy="secret"' in page
    # Never again: not in the database, not in the session, not on any later page.
    assert secret not in str(ApiKey.objects.values().get())
    assert secret not in str(dict(client.session.items()))
    for path in [KEYS, edit_url(key), revoke_url(key), NEW_KEY, "/"]:
        later = client.get(path)
        assert later.status_code == 200, path
        assert secret.encode() not in later.content, path
    assert key.public_id.encode() in client.get(KEYS).content
    # A reload of the page that showed it creates nothing and shows the secret no more.
    reloaded = client.get(created_url(key), follow=True)
    assert reloaded.redirect_chain == [(KEYS, 302)]
    assert secret.encode() not in reloaded.content and b"was shown once" in reloaded.content
    assert ApiKey.objects.count() == 1


def test_created_page_shows_only_the_key_just_created_by_its_owner(holder, make_account):
    _, client = holder
    first, _ = create_key_through_the_page(client, label="first")
    other = Client()
    other.force_login(make_account("other").user)
    client.post(NEW_KEY, key_fields(label="second"))
    second = ApiKey.objects.get(label="second")

    # Only the latest creation's page shows a secret; someone else's key is not found even with it pending.
    assert client.get(created_url(first))["Location"] == KEYS
    other.post(NEW_KEY, key_fields(label="theirs"))
    assert other.get(created_url(second)).status_code == 404
    assert client.post(created_url(second)).status_code == 405
    assert SECRET_SHOWN.search(client.get(created_url(second)).content.decode())


def test_the_secret_shown_signs_requests(holder, markets, fund):
    account, client = holder
    fund(account, "USD", "1000")
    key, secret = create_key_through_the_page(client)
    bot = SignedClient(key.public_id, secret)

    assert bot.get("/v1/account/balances").status_code == 200
    # The order in the quick start is one this API accepts.
    page = client.post(NEW_KEY, key_fields(label="second"), follow=True).content.decode()
    body = re.search(r"BODY='(\{.*?\})'", page).group(1)
    placed = bot.post("/v1/orders", json.loads(body))
    assert placed.status_code == 201, placed.content
    assert SignedClient(key.public_id, "0" * 64).get("/v1/account/balances").status_code == 401


def quick_start(page: str, block: str) -> str:
    return html.unescape(re.search(rf'<pre id="{block}">(.*?)</pre>', page, re.DOTALL).group(1))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the migrations' rate tiers, after a flush
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_quick_start_as_printed_places_the_order_on_the_server_that_printed_it(live_server, markets, fund):
    user = get_user_model().objects.create_user("newcomer")
    fund(open_account(user), "USD", "1300")  # two orders of 0.01 BTC at 60,000 and their fees
    client = Client(HTTP_HOST=live_server.url.removeprefix("http://"))
    client.force_login(user)
    page = client.post(NEW_KEY, key_fields(), follow=True).content.decode()
    venv_bin = str(Path(sys.executable).parent)

    shell = subprocess.run(["bash", "-c", quick_start(page, "quickstart")], capture_output=True, text=True,
                           timeout=60, check=False, env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"})
    python = subprocess.run([sys.executable, "-c", quick_start(page, "quickstart-python")], capture_output=True,
                            text=True, timeout=60, check=False)

    assert f"curl -X POST {live_server.url}/v1/orders" in page and f'Client("{live_server.url}"' in page
    assert shell.returncode == 0 and python.returncode == 0, shell.stderr + python.stderr
    balances, end = json.JSONDecoder().raw_decode(shell.stdout)  # an answer a line
    order = json.loads(shell.stdout[end:])
    usd = next(row["spot"] for row in balances["balances"] if row["asset"] == "USD")
    assert usd["total"] == "1300.00" and order["status"] == "open", shell.stdout
    assert order["post_only"] is True  # should the market be below its price: rejected, never a purchase
    guard = quick_start(page, "quickstart").splitlines()[0]  # says so where hkt-sign is missing
    assert "is not on your PATH" in subprocess.run(["bash", "-c", guard], capture_output=True, text=True, check=True,
                                                   env={"PATH": "/usr/bin:/bin"}).stdout
    assert "'status': 'open'" in python.stdout.splitlines()[-1], python.stdout
    assert Order.objects.filter(account__user=user, status="open").count() == 2


def test_key_list_shows_each_key(holder):
    account, client = holder
    create_api_key(account, label="reader", scope="read_only", ip_allowlist=["2001:db8::/32"],
                   drift_tolerance_ms=1500)
    old, _ = create_api_key(account, label="retired", scope="trade", ip_allowlist=[])
    client.post(revoke_url(old))

    page = client.get(KEYS).content.decode()

    assert "reader" in page and "read_only" in page and "2001:db8::/32" in page and "1500 ms" in page
    assert "never" in page  # last used
    assert "revoked" in page and f'href="{edit_url(old)}"' not in page


def test_revoke_asks_first_then_signed_requests_are_refused(holder):
    account, client = holder
    key, secret = create_key_through_the_page(client)
    bot = SignedClient(key.public_id, secret)
    assert bot.get("/v1/account/balances").status_code == 200

    confirmation = client.get(revoke_url(key))
    assert confirmation.status_code == 200 and b"Revoke this key" in confirmation.content
    key.refresh_from_db()
    assert key.revoked_at is None  # GET only asks

    response = client.post(revoke_url(key))

    assert response.status_code == 302 and response["Location"] == KEYS
    key.refresh_from_db()
    assert key.revoked_at is not None
    refused = bot.get("/v1/account/balances")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "API_KEY_REVOKED"
    assert client.get(edit_url(key)).status_code == 404  # a revoked key is no longer edited


def test_edit_changes_label_allowlist_and_drift(holder):
    account, client = holder
    key, _ = create_api_key(account, label="old", scope="trade", ip_allowlist=[])

    response = client.post(edit_url(key), key_fields(label="new", scope="read_only",
                                                     ip_allowlist="192.0.2.1\n2001:db8::/48", drift_tolerance_ms="20000"))

    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.label, key.scope, key.ip_allowlist, key.drift_tolerance_ms) == (
        "new", "read_only", ["192.0.2.1/32", "2001:db8::/48"], 20000)
    form = client.get(edit_url(key)).context["form"]
    assert form.initial["ip_allowlist"] == "192.0.2.1/32\n2001:db8::/48"


def test_bad_allowlist_entry_is_a_field_error_and_changes_nothing(holder):
    account, client = holder
    key, _ = create_api_key(account, label="bot", scope="trade", ip_allowlist=["192.0.2.1"])
    before = ApiKey.objects.values().get()

    response = client.post(edit_url(key), key_fields(label="renamed", ip_allowlist="192.0.2.7\nexample.com"))
    out_of_range = client.post(edit_url(key), key_fields(label="renamed", drift_tolerance_ms="999"))

    assert response.status_code == 200
    assert form_errors(response, "ip_allowlist") == ["Not an IP address or CIDR range: example.com"]
    assert b"Not an IP address or CIDR range: example.com" in response.content
    assert form_errors(out_of_range, "drift_tolerance_ms")
    assert ApiKey.objects.values().get() == before
    created = client.post(NEW_KEY, key_fields(ip_allowlist="10.0.0.0/33"))
    assert form_errors(created, "ip_allowlist") and ApiKey.objects.count() == 1


@pytest.mark.parametrize("fields, field", [
    ({"label": "bot\x1b[31m"}, "label"),  # a terminal escape
    ({"label": "bot\u202egnp.exe"}, "label"),  # a right-to-left override: shown as "bot" + "exe.png"
    ({"ip_allowlist": "fe80::1%eth0"}, "ip_allowlist"),  # an IPv6 zone: an interface of the host that wrote it
    ({"ip_allowlist": "\n".join(f"192.0.2.{n}" for n in range(101))}, "ip_allowlist"),  # past the 100 entries
])
def test_a_key_refuses_labels_that_hide_text_zoned_addresses_and_overlong_allowlists(holder, fields, field):
    account, client = holder

    response = client.post(NEW_KEY, key_fields(**fields))

    assert response.status_code == 200 and form_errors(response, field)
    assert not ApiKey.objects.filter(account=account).exists()


def test_an_account_holds_at_most_its_cap_of_live_keys(holder, make_account):
    """Each key has its own rate budget: more keys must not mean an unbounded budget."""
    account, client = holder
    keys = [create_api_key(account, label=f"bot {n}", scope="read_only", ip_allowlist=[])[0]
            for n in range(ApiKey.MAX_LIVE_PER_ACCOUNT)]

    refused = client.post(NEW_KEY, key_fields(label="one too many"))

    assert refused.status_code == 200
    assert refused.context["form"].non_field_errors() == [
        f"An account has at most {ApiKey.MAX_LIVE_PER_ACCOUNT} live keys: revoke one first."]
    assert not ApiKey.objects.filter(label="one too many").exists()
    other, _ = create_api_key(make_account("other"), label="another account's", scope="trade", ip_allowlist=[])
    assert other.revoked_at is None  # the cap is per account
    assert client.post(revoke_url(keys[0])).status_code == 302
    key, _ = create_key_through_the_page(client, label="after a revoke")
    assert key.account == account
    assert ApiKey.objects.filter(account=account, revoked_at__isnull=True).count() == ApiKey.MAX_LIVE_PER_ACCOUNT
    assert f"at most {ApiKey.MAX_LIVE_PER_ACCOUNT} live keys".encode() in client.get(KEYS).content


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_creates_racing_for_the_last_place_under_the_cap_make_one_key(make_account):
    account = make_account("racer")
    for n in range(ApiKey.MAX_LIVE_PER_ACCOUNT):
        create_api_key(account, label=f"bot {n}", scope="read_only", ip_allowlist=[])

    def create(label):
        try:
            return create_api_key(account, label=label, scope="read_only", ip_allowlist=[])[0].label
        except InvalidRequest as error:
            return error.details["limit"]

    for round_ in range(4):  # each round one place freed, and four creates racing for it
        live = ApiKey.objects.filter(account=account, revoked_at__isnull=True)
        revoke_api_keys(ApiKey.objects.filter(pk=live.first().pk))
        results = race(create, [f"racer {round_}.{n}" for n in range(4)])
        assert [result for result in results if isinstance(result, int)] == [ApiKey.MAX_LIVE_PER_ACCOUNT] * 3
        assert ApiKey.objects.filter(account=account, revoked_at__isnull=True).count() == ApiKey.MAX_LIVE_PER_ACCOUNT


def test_another_users_key_is_not_found(holder, make_account):
    _, client = holder
    other = make_account("other")
    key, secret = create_api_key(other, label="theirs", scope="trade", ip_allowlist=[])
    before = ApiKey.objects.values().get()

    responses = [
        client.get(edit_url(key)),
        client.post(edit_url(key), key_fields(label="mine now", ip_allowlist="0.0.0.0/0")),
        client.get(revoke_url(key)),
        client.post(revoke_url(key)),
    ]

    assert [response.status_code for response in responses] == [404] * 4
    assert ApiKey.objects.values().get() == before
    assert b"theirs" not in client.get(KEYS).content
    assert SignedClient(key.public_id, secret).get("/v1/account/balances").status_code == 200


def test_trade_withdraw_needs_the_password_again(holder_with_password):
    account, client = holder_with_password
    withdraw = key_fields(scope="trade_withdraw", ip_allowlist="198.51.100.0/24")

    missing = client.post(NEW_KEY, withdraw)
    wrong = client.post(NEW_KEY, {**withdraw, "password": "not-my-password"})
    no_allowlist = client.post(NEW_KEY, {**withdraw, "ip_allowlist": "", "password": PASSWORD})

    assert form_errors(missing, "password") and form_errors(wrong, "password")
    assert form_errors(no_allowlist, "ip_allowlist") == ["A key that can withdraw must be limited to an IP allowlist."]
    assert not ApiKey.objects.exists()
    for response in (missing, wrong, no_allowlist):
        assert not SECRET_SHOWN.search(response.content.decode())
        assert PASSWORD.encode() not in response.content

    created = client.post(NEW_KEY, {**withdraw, "password": PASSWORD}, follow=True)

    assert created.status_code == 200 and SECRET_SHOWN.search(created.content.decode())
    key = ApiKey.objects.get()
    assert key.account == account and key.scope == "trade_withdraw" and key.ip_allowlist == ["198.51.100.0/24"]


def test_changing_a_key_to_trade_withdraw_needs_the_password(holder_with_password):
    account, client = holder_with_password
    key, _ = create_api_key(account, label="bot", scope="trade", ip_allowlist=["198.51.100.7"])
    before = ApiKey.objects.values().get()
    upgrade = key_fields(label="bot", scope="trade_withdraw", ip_allowlist="198.51.100.7")

    wrong = client.post(edit_url(key), {**upgrade, "password": "guess"})
    assert form_errors(wrong, "password")
    assert ApiKey.objects.values().get() == before

    right = client.post(edit_url(key), {**upgrade, "password": PASSWORD})

    assert right.status_code == 302
    key.refresh_from_db()
    assert key.scope == "trade_withdraw"


def test_csrf_is_enforced(holder):
    account, _ = holder
    key, _ = create_api_key(account, label="bot", scope="trade", ip_allowlist=[])
    client = Client(enforce_csrf_checks=True)
    client.force_login(account.user)

    assert client.post(NEW_KEY, key_fields(label="forged")).status_code == 403
    assert client.post(revoke_url(key)).status_code == 403
    assert client.post(edit_url(key), key_fields(label="forged")).status_code == 403
    assert client.post("/account/logout/").status_code == 403
    key.refresh_from_db()
    assert key.label == "bot" and key.revoked_at is None and ApiKey.objects.count() == 1

    token = client.get(NEW_KEY).context["csrf_token"]
    with_token = client.post(NEW_KEY, {**key_fields(label="real"), "csrfmiddlewaretoken": str(token)})
    assert with_token.status_code == 302 and ApiKey.objects.filter(label="real").exists()


def test_logged_out_visitors_are_sent_to_log_in(make_account):
    account = make_account()
    key, _ = create_api_key(account, label="bot", scope="trade", ip_allowlist=[])
    client = Client()

    for path in [KEYS, NEW_KEY, created_url(key), edit_url(key), revoke_url(key)]:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == f"/account/login/?next={path}"
    assert client.post(NEW_KEY, key_fields(label="anon")).status_code == 302
    assert client.post(revoke_url(key)).status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is None and ApiKey.objects.count() == 1
    assert client.get("/account/login/").status_code == 200
    assert client.get("/account/signup/").status_code == 200


def test_landing_page_links_docs_account_and_admin(markets):
    page, overview = Client().get("/"), Client().get("/account/")  # / is the market page (test_market_page.py)

    assert page.status_code == overview.status_code == 200
    for link in [b'href="/v1/docs"', b'href="/account/"']:
        assert link in page.content
    for link in [b'href="/account/keys/"', b'href="/admin/"']:
        assert link in overview.content

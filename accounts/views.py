"""Account settings pages: sign up, and the API keys of the logged-in user (list, create, edit, revoke).

Views stay thin: parse a form, call one service from accounts/keys.py, render. Every key view reaches
only the logged-in user's own keys (anyone else's is a 404). Creating a key is POST-redirect-GET: the
POST leaves only the new key's id in the session, and the GET that follows shows its secret once,
decrypted from the key's own stored ciphertext, marked no-store; that GET takes the id out of the
session, so a reload shows the secret no more. The secret itself is never in the session, a message
or a URL.
"""

from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse_lazy
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods

from accounts.forms import ApiKeyForm, SignUpForm
from accounts.keys import create_api_key, revoke_api_keys, update_api_key
from accounts.models import ApiKey
from accounts.passwords import LimitedPasswordChangeForm, LogInForm
from accounts.secrets import decrypt_secret
from accounts.services import open_account
from exchange.errors import ExchangeError

GET_POST = require_http_methods(["GET", "HEAD", "POST"])  # HEAD, as any page that answers GET
SECRET_TO_SHOW = "api_key_secret_to_show"  # session: the id of the key whose secret the next GET shows


def own_keys(request):
    """The logged-in user's keys, and nobody else's."""
    return ApiKey.objects.of_user(request.user)


def home(request):
    return render(request, "accounts/home.html")


class LogInView(auth_views.LoginView):
    """Django's, but a ``next`` naming the log-in page itself goes to LOGIN_REDIRECT_URL for a signed-in
    user, where Django raises (a redirection loop): a link anyone can send must not answer 500."""

    template_name = "accounts/login.html"
    authentication_form = LogInForm
    redirect_authenticated_user = True

    def get_redirect_url(self):
        url = super().get_redirect_url()
        return "" if url and urlsplit(url).path == self.request.path else url


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's (logged in, the current password asked): this session stays signed in, every other one of
    the user's is signed out (its stored hash of the password no longer matches)."""

    template_name = "accounts/password_change.html"
    form_class = LimitedPasswordChangeForm
    success_url = reverse_lazy("accounts:index")

    def get_form_kwargs(self) -> dict:
        return {**super().get_form_kwargs(), "request": self.request}

    def form_valid(self, form):
        messages.success(self.request, "Your password is changed. Any other session of yours is logged out.")
        return super().form_valid(form)


@sensitive_post_parameters("password1", "password2")
@GET_POST
def sign_up(request):
    if request.user.is_authenticated:
        return redirect("accounts:keys")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            open_account(user)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}. Your trading account is open.")
        return redirect("accounts:keys")
    return render(request, "accounts/signup.html", {"form": form})


@login_required
def key_list(request):
    keys = own_keys(request).active_first()
    return render(request, "accounts/key_list.html", {"keys": keys, "live_key_limit": ApiKey.MAX_LIVE_PER_ACCOUNT})


@sensitive_variables()  # the new key's secret passes through a local, unused here
@sensitive_post_parameters("password")
@login_required
@GET_POST
def key_create(request):
    form = ApiKeyForm(request.POST or None, request=request)
    if request.method == "POST" and form.is_valid():
        try:
            key, _ = create_api_key(open_account(request.user), **form.service_arguments())
        except ExchangeError as error:
            form.add_exchange_error(error)
        else:
            request.session[SECRET_TO_SHOW] = key.pk
            return redirect("accounts:key_created", pk=key.pk)
    return render(request, "accounts/key_form.html", {"form": form, "creating": True})


@sensitive_variables("secret")
@login_required
@require_GET  # not HEAD: it would spend the secret's one showing with no page to show it
def key_created(request, pk: int):
    key = get_object_or_404(own_keys(request), pk=pk, revoked_at__isnull=True)
    if request.session.get(SECRET_TO_SHOW) != key.pk:
        messages.info(request, f"The secret of key “{key.label}” was shown once, when it was created, "
                               "and cannot be shown again. If it is lost, revoke the key and create a new one.")
        return redirect("accounts:keys")
    del request.session[SECRET_TO_SHOW]
    secret = decrypt_secret(key.secret_ciphertext)
    response = render(request, "accounts/key_created.html", {
        "key": key,
        "secret": secret,
        "server": request.build_absolute_uri("/").rstrip("/"),
    })
    response["Cache-Control"] = "no-store"
    return response


@sensitive_post_parameters("password")
@login_required
@GET_POST
def key_edit(request, pk: int):
    key = get_object_or_404(own_keys(request), pk=pk, revoked_at__isnull=True)
    form = ApiKeyForm(request.POST or None, request=request, initial=ApiKeyForm.initial_for(key))
    if request.method == "POST" and form.is_valid():
        try:
            update_api_key(key, **form.service_arguments())
        except ExchangeError as error:
            form.add_exchange_error(error)
        else:
            messages.success(request, f"Key “{key.label}” updated.")
            return redirect("accounts:keys")
    return render(request, "accounts/key_form.html", {"form": form, "key": key, "creating": False})


@login_required
@GET_POST
def key_revoke(request, pk: int):
    key = get_object_or_404(own_keys(request), pk=pk)
    if request.method == "POST":
        if revoke_api_keys(own_keys(request).filter(pk=key.pk)):
            messages.success(request, f"Key “{key.label}” revoked: requests signed with it are refused from now on.")
        return redirect("accounts:keys")
    return render(request, "accounts/key_revoke.html", {"key": key})

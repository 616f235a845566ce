"""The account holder's earn page (``/account/earn/``): the products open to subscription, with a form
to subscribe to each, and the account's subscriptions with the interest they earned, each active one
with its redeem button. The forms post, then redirect back to the page (POST-redirect-GET), saying
what happened; they go through the same parsing and services as the API, and the page shows the
same numbers, formatted the same way, as ``GET /v1/earn/products`` and ``GET /v1/earn/subscriptions``."""

import secrets

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe
from rest_framework.exceptions import ValidationError

from accounts.services import account_of
from earn.api.views import EarnProductSerializer, SubscriptionCreateSerializer, SubscriptionSerializer
from earn.models import EarnProduct, Subscription
from earn.subscriptions import redeem, subscribe
from exchange.errors import ExchangeError, InvalidFields, InvalidRequest
from exchange.fields import parse_integer

RECENT_SUBSCRIPTIONS = 100  # the page's; the API pages back through the rest


def trading_account(request):
    account = account_of(request.user)
    if account is None:
        raise InvalidRequest("This login has no trading account.")
    return account


@login_required
@require_safe
def home(request):
    account = account_of(request.user)
    products = EarnProduct.objects.open()
    subscriptions = (list(Subscription.objects.filter(account=account).for_rendering().order_by("-id")
                          [:RECENT_SUBSCRIPTIONS]) if account else [])
    return render(request, "earn/home.html", {
        "products": list(zip(products, EarnProductSerializer(products, many=True).data)),
        # Each rendered subscribe form's client_subscription_id: sent twice (a double click), it subscribes once.
        "form_id": secrets.token_urlsafe(12),
        "subscriptions": list(zip(subscriptions, SubscriptionSerializer(subscriptions, many=True).data)),
        "has_account": account is not None,
        "now": timezone.now(),
        "limit": RECENT_SUBSCRIPTIONS,
    })


def refusal(error: Exception) -> str:
    """What a refused form says: the error's message, and each field's complaint."""
    if isinstance(error, ValidationError):
        error = InvalidFields(error.detail)
    if isinstance(error, InvalidFields):
        return " ".join(f"{name}: {' '.join(map(str, problems))}" for name, problems in error.fields.items())
    return error.message


@login_required
@require_POST
def subscribe_view(request):
    given = {name: request.POST[name] for name in ("product_id", "amount", "client_subscription_id")
             if name in request.POST}
    if parse_integer(given.get("product_id", "")) is not None:  # a form's is text; the API takes a JSON number
        given["product_id"] = parse_integer(given["product_id"])
    form = SubscriptionCreateSerializer(data=given)
    try:
        form.is_valid(raise_exception=True)
        subscription, created = subscribe(trading_account(request), form.validated_data)
    except (ValidationError, ExchangeError) as error:
        messages.error(request, f"Not subscribed: {refusal(error)}")
    else:
        shown = SubscriptionSerializer(subscription).data
        messages.success(request, f"Subscribed {shown['amount']} {shown['asset']} (subscription {subscription.pk})"
                                  + ("." if created else ", once: the form was sent again."))
    return redirect("earn:home")


@login_required
@require_POST
def redeem_view(request, pk: int):
    asked_at = timezone.now()
    try:
        subscription = redeem(trading_account(request), pk)
    except ExchangeError as error:
        messages.error(request, f"Not redeemed: {refusal(error)}")
    else:
        shown = SubscriptionSerializer(subscription).data
        if subscription.redeemed_at < asked_at:  # a repeat (a double click): the service changed nothing
            messages.info(request, f"Subscription {subscription.pk} was redeemed already.")
        else:
            messages.success(request, f"Subscription {subscription.pk} redeemed: {shown['amount']} {shown['asset']} "
                                      "is back in your spot wallet.")
    return redirect("earn:home")

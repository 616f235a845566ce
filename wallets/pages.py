"""The account holder's withdrawal pages: the address book (``/account/wallets/addresses/``: list,
add with the password asked again, remove) and the withdrawals (``/account/wallets/withdrawals/``,
with a cancel button while one is pending review). Each reaches only the logged-in user's own rows
(anyone else's is a 404); every change is a POST followed by a redirect, and calls one service of
wallets/withdrawals.py."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST, require_safe

from accounts.passwords import password_is_right
from accounts.services import open_account
from accounts.views import GET_POST
from exchange.errors import InvalidFields, WithdrawalNotCancellable
from trading.models import Asset
from wallets.api.withdrawals import WithdrawalSerializer
from wallets.models import Withdrawal, WithdrawalAddress
from wallets.withdrawals import add_address, cancel_withdrawal, remove_address

WITHDRAWALS_PER_PAGE = 50


class AddressForm(forms.Form):
    asset = forms.ModelChoiceField(queryset=Asset.objects.order_by("symbol"), to_field_name="symbol",
                                   help_text="Withdrawals of this asset only may go to the address.")
    address = forms.CharField(max_length=128, strip=False, widget=forms.TextInput(attrs={"spellcheck": "false"}),
                              help_text="Exactly as the receiving wallet shows it, with its tag or memo if it has one.")
    label = forms.CharField(max_length=80, required=False, help_text="A name for you, e.g. “cold wallet”.")
    password = forms.CharField(label="Your password", strip=False,
                               widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
                               help_text="Confirms it is really you: an address in the book can receive your money.")

    def __init__(self, *args, request, **kwargs):
        self.request = request
        super().__init__(*args, **kwargs)

    def clean_password(self) -> str:
        if not password_is_right(self.request, self.request.user, self.cleaned_data["password"]):
            raise forms.ValidationError("That is not your password.")
        return self.cleaned_data["password"]


def own_addresses(request):
    return WithdrawalAddress.objects.filter(account__user=request.user).select_related("asset")


def own_withdrawals(request):
    return Withdrawal.objects.filter(account__user=request.user).select_related("asset")


@login_required
@require_safe
def addresses(request):
    now = timezone.now()
    return render(request, "wallets/addresses.html", {
        "addresses": own_addresses(request).order_by("asset__symbol", "-created_at"), "now": now,
        "waiting_until": now + settings.WITHDRAWAL_ADDRESS_WAITING_PERIOD,
    })


@sensitive_post_parameters("password")
@login_required
@GET_POST
def address_add(request):
    form = AddressForm(request.POST or None, request=request)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            entry = add_address(open_account(request.user), data["asset"], data["address"], data["label"])
        except InvalidFields as error:
            for field, field_messages in error.fields.items():
                for message in field_messages:
                    form.add_error(field, message)
        else:
            messages.success(request, f"{entry.asset.symbol} address {entry.address} added; withdrawals may go "
                                      f"there from {entry.usable_from:%Y-%m-%d %H:%M} UTC.")
            return redirect("wallets:addresses")
    return render(request, "wallets/address_form.html", {"form": form})


@login_required
@GET_POST
def address_remove(request, pk: int):
    entry = get_object_or_404(own_addresses(request), pk=pk)
    if request.method == "POST":
        remove_address(entry.account, entry.pk)
        messages.success(request, f"{entry.asset.symbol} address {entry.address} removed from your address book.")
        return redirect("wallets:addresses")
    return render(request, "wallets/address_remove.html", {"entry": entry})


@login_required
@require_safe
def withdrawals(request):
    page = Paginator(own_withdrawals(request).order_by("-id"), WITHDRAWALS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "wallets/withdrawals.html", {
        "page": page, "rows": zip(page, WithdrawalSerializer(page, many=True).data),
        "pending_review": Withdrawal.Status.PENDING_REVIEW,
    })


@login_required
@require_POST
def withdrawal_cancel(request, pk: int):
    withdrawal = get_object_or_404(own_withdrawals(request), pk=pk)
    try:
        cancel_withdrawal(withdrawal.account, withdrawal.pk)
    except WithdrawalNotCancellable as refusal:
        messages.error(request, refusal.message)
    else:
        messages.success(request, f"Withdrawal {withdrawal.pk} cancelled: its amount and fee are available again.")
    return redirect("wallets:withdrawals")

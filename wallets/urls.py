"""The wallets' account pages, under /account/wallets/ (the API's routes are in wallets/api/urls.py)."""

from django.urls import path

from wallets import balance_pages, pages

app_name = "wallets"

urlpatterns = [
    path("", balance_pages.balances, name="balances"),
    path("ledger/", balance_pages.ledger, name="ledger"),
    path("addresses/", pages.addresses, name="addresses"),
    path("addresses/new/", pages.address_add, name="address_add"),
    path("addresses/<int:pk>/remove/", pages.address_remove, name="address_remove"),
    path("withdrawals/", pages.withdrawals, name="withdrawals"),
    path("withdrawals/<int:pk>/cancel/", pages.withdrawal_cancel, name="withdrawal_cancel"),
]

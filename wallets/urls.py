"""The wallets' account pages, under /account/wallets/ (the API's routes are in wallets/api/urls.py)."""

from django.urls import path

from wallets import balance_pages

app_name = "wallets"

urlpatterns = [
    path("", balance_pages.balances, name="balances"),
    path("ledger/", balance_pages.ledger, name="ledger"),
]

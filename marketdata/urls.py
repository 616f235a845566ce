"""The market page's URLs (the API's are in marketdata/api/urls.py)."""

from django.urls import path

from marketdata import pages

app_name = "market"

urlpatterns = [
    path("", pages.market_page, name="home"),
    path("markets/<str:pair>", pages.market_page, name="page"),
]

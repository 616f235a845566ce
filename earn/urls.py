"""The earn account page, under /account/earn/ (the API's routes are in earn/api/urls.py)."""

from django.urls import path

from earn import pages

app_name = "earn"

urlpatterns = [
    path("", pages.home, name="home"),
    path("subscribe/", pages.subscribe_view, name="subscribe"),
    path("subscriptions/<int:pk>/redeem/", pages.redeem_view, name="redeem"),
]

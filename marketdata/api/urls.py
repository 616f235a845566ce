from django.urls import path
from rest_framework.routers import SimpleRouter

from marketdata.api import views

router = SimpleRouter(trailing_slash=False)
router.register("markets", views.MarketViewSet, basename="market")
router.register("ticker", views.TickerViewSet, basename="ticker")
router.register("orderbook", views.OrderBookViewSet, basename="orderbook")
router.register("trades", views.TradeViewSet, basename="trades")

urlpatterns = [path("time", views.TimeView.as_view(), name="time"), *router.urls]

from django.urls import path
from rest_framework.routers import SimpleRouter

from marketdata.api import views

router = SimpleRouter(trailing_slash=False)
router.register("markets", views.MarketViewSet, basename="market")
router.register("ticker", views.TickerViewSet, basename="ticker")
router.register("orderbook", views.OrderBookViewSet, basename="orderbook")
router.register("trades", views.TradeViewSet, basename="trades")
router.register("candles", views.CandleViewSet, basename="candles")
router.register("assets", views.AssetViewSet, basename="asset")

urlpatterns = [path("time", views.TimeView.as_view(), name="time"),
               path("tickers", views.TickersView.as_view(), name="tickers"), *router.urls]

from django.urls import path

from marketdata.consumers import StreamConsumer

websocket_urlpatterns = [path("v1/ws", StreamConsumer.as_asgi())]

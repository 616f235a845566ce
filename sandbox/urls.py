from django.urls import path

from sandbox import api

urlpatterns = [path("sandbox/faucet", api.FaucetView.as_view(), name="sandbox-faucet")]

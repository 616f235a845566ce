from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularJSONAPIView

from exchange.apidocs import SwaggerPageView, SwaggerScriptView

handler400 = "exchange.errors.bad_request_view"
handler404 = "exchange.errors.not_found_view"
handler500 = "exchange.errors.server_error_view"

v1 = [
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SwaggerPageView.as_view(), name="docs"),
    path("docs.js", SwaggerScriptView.as_view(), name="docs_script"),
    path("", include("marketdata.api.urls")),
    path("", include("trading.api.urls")),
    path("", include("wallets.api.urls")),
    path("", include("earn.api.urls")),
    path("", include("sandbox.urls")),  # answers 404 outside the sandbox
]

urlpatterns = [
    # Browsers ask for /favicon.ico whatever the page links; the one icon is static/favicon.svg.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"))),
    # The admin's own page would check the current password with no limit: the account page's is limited.
    path("admin/password_change/", RedirectView.as_view(pattern_name="accounts:password_change")),
    path("admin/", admin.site.urls),
    path("account/earn/", include("earn.urls")),
    path("account/wallets/", include("wallets.urls")),
    path("account/", include("accounts.urls")),
    path("v1/", include(v1)),
    path("", include("marketdata.urls")),  # the market page at / and /markets/<PAIR>
]

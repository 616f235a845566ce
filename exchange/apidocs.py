"""The API reference page, ``/v1/docs``: drf-spectacular's Swagger UI, with nothing inline so that it holds
under the pages' Content-Security-Policy (exchange/security.py). Its start-up script is served apart, at
``/v1/docs.js`` (drf-spectacular's split view asks for it as ``?script=``, an empty parameter that the
strict query check refuses); the script carries the visitor's CSRF token for "Try it out", so it is never
cached."""

from django.utils.cache import patch_cache_control
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView, SpectacularSwaggerView
from rest_framework.response import Response


class SwaggerPageView(SpectacularSwaggerView):
    url_name = "openapi"
    template_name = "exchange/swagger_ui.html"


class SwaggerScriptView(SpectacularSwaggerSplitView):
    url_name = "openapi"

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        response = Response(
            data={"schema_url": self._get_schema_url(request),
                  "settings": self._dump(spectacular_settings.SWAGGER_UI_SETTINGS),
                  "oauth2_config": self._dump(spectacular_settings.SWAGGER_UI_OAUTH2_CONFIG),
                  "csrf_header_name": self._get_csrf_header_name(),
                  "schema_auth_names": self._dump(self._get_schema_auth_names())},
            template_name=self.template_name_js, content_type="application/javascript")
        patch_cache_control(response, private=True, no_store=True)
        response["Cross-Origin-Resource-Policy"] = "same-origin"  # no other site's page includes it
        return response

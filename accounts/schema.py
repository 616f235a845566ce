"""OpenAPI description of the signed-request headers (drf-spectacular extension)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension

SIGNING = (
    "Sign every private request: X-Api-Signature is the lowercase hex HMAC-SHA256, keyed with the "
    "key's secret, of `{timestamp}\\n{nonce}\\n{METHOD}\\n{path with query}\\n{raw body}`."
)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = ["ApiKey", "ApiTimestamp", "ApiNonce", "ApiSignature"]

    def get_security_definition(self, auto_schema):
        headers = [
            ("X-Api-Key", "The key's public id (hkt_live_...)."),
            ("X-Api-Timestamp", "Client time, integer ms since the epoch, within the key's drift tolerance."),
            ("X-Api-Nonce", "8-64 characters of [A-Za-z0-9_-], never reused with the same key."),
            ("X-Api-Signature", SIGNING),
        ]
        return [{"type": "apiKey", "in": "header", "name": name, "description": text} for name, text in headers]

"""System checks of what the accounts' protections depend on (``manage.py check``, and the start of every
management command that runs checks, ``migrate`` included)."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security)
def proxy_listed_when_behind_one(app_configs, **kwargs) -> list[Warning]:
    """Behind a TLS proxy with no TRUSTED_PROXIES, every request's address is the proxy's: unsigned requests
    share one public rate budget, password attempts one address budget, and key allowlists see no client."""
    if settings.BEHIND_TLS and not settings.TRUSTED_PROXIES:
        return [Warning(
            "EXCHANGE_BEHIND_TLS is set but TRUSTED_PROXIES is empty: every client will appear as the proxy's "
            "address (one public rate budget for all, IP allowlists matching the proxy).",
            hint="Set TRUSTED_PROXIES to the proxy's address, e.g. 127.0.0.1 for the shipped nginx on this host.",
            id="accounts.W001")]
    return []

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # The OpenAPI description of signed requests, the system checks, and the key cache's upkeep.
        from accounts import checks, key_cache, schema, signals  # noqa: F401

        key_cache.start()  # the nonce store's epoch

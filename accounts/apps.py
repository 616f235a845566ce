from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        from accounts import schema, signals  # noqa: F401  the OpenAPI description of signed requests, cache upkeep

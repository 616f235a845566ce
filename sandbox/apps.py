from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """What the sandbox (EXCHANGE_ENVIRONMENT=sandbox) adds to the same exchange: testnet money and a
    living market. It sits above every other app and changes none of their code paths."""

    name = "sandbox"

    def ready(self) -> None:
        from accounts.signals import account_opened
        from sandbox.services import on_account_opened

        account_opened.connect(on_account_opened, dispatch_uid="sandbox.on_account_opened")

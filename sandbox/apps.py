from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """What the sandbox (EXCHANGE_ENVIRONMENT=sandbox) adds to the same exchange: testnet money and a
    living market. It sits above every other app and changes none of their code paths."""

    name = "sandbox"

"""Load the demo assets and markets and make sure an operator can log in to the admin.

Idempotent: run it on every start. The operator's password comes from EXCHANGE_ADMIN_PASSWORD, or
is generated and printed the first time the operator is created.
"""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.services import check_username
from trading.demo import load_demo_markets


class Command(BaseCommand):
    help = "Create the demo assets and markets (BTC-USD, ETH-USD, ETH-BTC) and the operator login."

    def add_arguments(self, parser):
        parser.add_argument("--operator", default=os.environ.get("EXCHANGE_ADMIN_USER", "operator"))
        parser.add_argument("--server", default="http://127.0.0.1:8000", help="The address served, for the admin link.")

    @transaction.atomic
    def handle(self, *args, operator: str, server: str, **options):
        try:
            check_username(operator)
        except ValidationError as error:
            raise CommandError(f"--operator: {' '.join(error.messages)}") from None
        markets = load_demo_markets()
        self.stdout.write(f"Markets: {', '.join(market.pair for market in markets)}")
        self.ensure_operator(operator, server)

    def ensure_operator(self, username: str, server: str) -> None:
        User = get_user_model()
        password = os.environ.get("EXCHANGE_ADMIN_PASSWORD")
        user = User.objects.filter(username=username).first()
        if user is not None and not password:
            self.stdout.write(f"Operator login: {username} (password unchanged; set EXCHANGE_ADMIN_PASSWORD to reset)")
            return
        password = password or secrets.token_urlsafe(12)
        if user is None:
            User.objects.create_superuser(username=username, email="", password=password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        self.stdout.write(self.style.SUCCESS(f"Operator login: {username} / {password}  ({server}/admin/)"))

"""What the wallet services share about a client's request: the asset it names, its digest, and
making it once however often it is sent (idempotency by the client's id, as orders have)."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TypeVar

from django.db import IntegrityError
from django.db.models import Model, QuerySet

from exchange.errors import ExchangeError, InvalidField
from trading.models import Asset

Made = TypeVar("Made", bound=Model)


def access_asset(symbol: str) -> Asset:
    asset = Asset.objects.filter(symbol=symbol).first()
    if asset is None:
        raise InvalidField("asset", f"Unknown asset {symbol!r}.")
    return asset


@dataclass(frozen=True)
class ClientRequest:
    """A request a client may repeat; ``client_id_field`` names the field that makes a repeat one."""

    client_id_field = ""

    @property
    def client_id(self) -> str | None:
        return getattr(self, self.client_id_field)

    def digest(self) -> str:
        """Equal for the same request however its amounts were spelt ("1" and "1.00" are one amount)."""
        canonical = {name: format(value.normalize(), "f") if isinstance(value, Decimal) else value
                     for name, value in asdict(self).items()}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def earlier_request(rows: QuerySet[Made], request: ClientRequest,
                    refuse: Callable[[Made], ExchangeError]) -> Made | None:
    """The row an earlier identical request made, among the account's ``rows``; ``refuse(row)`` is
    raised when the client's id was used for a different request."""
    if request.client_id is None:
        return None
    existing = rows.filter(**{request.client_id_field: request.client_id}).first()
    if existing is not None and existing.request_digest != request.digest():
        raise refuse(existing)
    return existing


def make_once(make: Callable[[], Made], earlier: Callable[[], Made | None]) -> tuple[Made, bool]:
    """``(make(), True)``, or ``(earlier(), False)`` for a repeat.

    The earlier row is looked up only when making fails: when two identical requests race, the
    unique constraint on the client's id decides (the second insert waits for the first to commit,
    then fails, and the look-up finds it), and a repeat that would itself now be refused (funds
    since moved) still returns what the first request made.
    """
    try:
        return make(), True
    except (ExchangeError, IntegrityError):
        existing = earlier()
        if existing is None:
            raise
        return existing, False

"""Key scopes as DRF permissions. A browser session (CSRF-checked) acts as its account holder."""

from rest_framework.permissions import BasePermission

from accounts.models import ApiKey
from exchange.errors import ErrorCode, Forbidden

Scope = ApiKey.Scope


class ScopeRequired(BasePermission):
    scopes: frozenset[str] = frozenset()
    needs = ""

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if isinstance(key, ApiKey) and key.scope not in self.scopes:
            raise Forbidden(ErrorCode.INSUFFICIENT_SCOPE,
                            f"This key's scope is {key.scope}; this call needs {self.needs}.",
                            scope=key.scope, required=self.needs)
        return True


class CanRead(ScopeRequired):
    scopes = frozenset(Scope.values)
    needs = "read_only, trade or trade_withdraw"


class CanTrade(ScopeRequired):
    scopes = frozenset({Scope.TRADE, Scope.TRADE_WITHDRAW})
    needs = "trade or trade_withdraw"


class CanWithdraw(ScopeRequired):
    scopes = frozenset({Scope.TRADE_WITHDRAW})
    needs = "trade_withdraw"

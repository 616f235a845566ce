"""Django database backends of our own: Django's for each vendor, plus how each stores an amount
(trading.models.AmountField) exactly. Settings select them as ENGINE; what differs between the
vendors for amounts lives here, not in the field or its callers."""

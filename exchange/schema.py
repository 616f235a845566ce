"""drf-spectacular AutoSchema that documents each operation's rate-limit weight."""

from drf_spectacular.openapi import AutoSchema


class ExchangeAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None or not path.startswith("/v1/") or path.startswith("/v1/openapi"):
            return operation
        weight = getattr(self.view, "rate_weight", 1)
        if isinstance(weight, dict):
            weight = weight.get(getattr(self.view, "action", None), 1)
        described = getattr(self.view, "rate_weight_description", str(weight))
        operation["x-rate-limit-weight"] = described
        operation["description"] = f"{operation.get('description', '')}\n\nRate-limit weight: {described}.".strip()
        return operation

"""drf-spectacular's AutoSchema for the /v1/ operations: what every operation shares, in one place.

Each operation names its own ``operationId`` (``extend_schema(operation_id=...)``, camelCase) and its own
error codes (``exchange.openapi.error_responses``); this adds what the layers every request goes through
can answer (exchange.openapi.codes_of_every_operation), the headers of every response, the weight as
numbers (``x-rate-limit-weight``; ``x-rate-limit-weight-max`` when it depends on the request,
``x-rate-limit-weight-per-item`` for a batch), and the links a view names from an operation's answer to
the operations on what it answered (``response_links``: by operationId, the operations and their
parameters). Descriptions come only from ``extend_schema`` and from a serializer's own docstring: a
mixin's or a view's docstring is written for the people who work on the code.
"""

import inspect

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, force_instance

from exchange.fields import DECIMAL_OUTPUT_PATTERN, POSITIVE_DECIMAL_PATTERN, SIGNED_DECIMAL_OUTPUT_PATTERN
from exchange.openapi import (STATUS_TEXT, codes_of_every_operation, error_codes_by_status, error_component_name,
                              error_schema, header_object, response_headers)


class ExchangeAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        weight = getattr(self.view, "rate_weight", 1)
        if isinstance(weight, dict):
            weight = weight.get(getattr(self.view, "action", None), 1)
        operation["x-rate-limit-weight"] = weight
        if getattr(self.view, "rate_weight_per_item", False):
            operation["x-rate-limit-weight-per-item"] = True
        if hasattr(self.view, "rate_weight_max"):
            operation["x-rate-limit-weight-max"] = self.view.rate_weight_max
        described = getattr(self.view, "rate_weight_description", str(weight))
        operation["description"] = f"{operation.get('description', '')}\n\nRate-limit weight: {described}.".strip()
        if "requestBody" in operation:
            # A body with a field it must have cannot be left out; one without (`{"pair"}` optional) can.
            serializer = force_instance(self.get_request_serializer())
            operation["requestBody"]["required"] = bool(
                getattr(serializer, "body_constraints", None) or any(f.required for f in serializer.fields.values()))
        for status, codes in error_codes_by_status(operation, codes_of_every_operation(operation)).items():
            operation["responses"][str(status)] = self.error_response(status, codes)
        operation["responses"] = dict(sorted(operation["responses"].items()))
        links = getattr(self.view, "response_links", {}).get(operation["operationId"])
        for status, response in operation["responses"].items():
            if links and status.startswith("2"):
                response["links"] = {name: {"operationId": name, "parameters": parameters,
                                            "description": f"The {name} operation on what this one answered."}
                                     for name, parameters in links.items()}
            response["headers"] = {name: self.header(name, description, required)
                                   for name, (description, required) in response_headers(int(status)).items()}
        return operation

    def error_response(self, status: int, codes: set[str]) -> dict:
        """The error body of one status, its codes an enum: a component per set of codes, shared by the
        operations that answer the same set (so that a generated client has one model for each)."""
        component = ResolvedComponent(name=error_component_name(status, codes), type=ResolvedComponent.SCHEMA,
                                      object=(status, frozenset(codes)), schema=error_schema(codes))
        self.registry.register_on_missing(component)
        return {"description": f"{STATUS_TEXT[status]} Error codes: {', '.join(sorted(codes))}.",
                "content": {"application/json": {"schema": component.ref}}}

    def header(self, name: str, description: str, required: bool) -> dict:
        """A header always there is a component (`#/components/headers/X-RateLimit-Limit`); one that may be
        missing is written out where it may be."""
        if not required:
            return header_object(name, description, required)
        component = ResolvedComponent(name=name, type=ResolvedComponent.HEADER, object=name,
                                      schema=header_object(name, description, required))
        self.registry.register_on_missing(component)
        return component.ref

    def get_operation_id(self):
        # Reached only when an operation did not name itself: generated names (`orders_cancel_create`)
        # would become the method names of every generated client.
        raise ImproperlyConfigured(f"{self.method} {self.path}: name the operation, extend_schema(operation_id=...)")

    def get_description(self):
        return ""  # extend_schema(description=...) gives it; a view's docstring is for developers

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        own = type(serializer).__dict__.get("__doc__")
        if own:
            schema["description"] = inspect.cleandoc(own)
        else:
            schema.pop("description", None)
        if direction == "request":
            if getattr(serializer, "refuses_unknown_fields", False):
                schema["additionalProperties"] = False
            # What validate() requires between fields, in JSON Schema (`oneOf` of two ways to name orders).
            schema.update(getattr(serializer, "body_constraints", {}))
        if direction == "response":
            # Every field of a response is always there, but one its serializer declares `required=False`.
            declared = getattr(serializer, "_declared_fields", {})
            schema["required"] = sorted(
                name for name in schema["properties"]
                if not (name in declared and declared[name]._kwargs.get("required") is False)
            )
        return schema

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        pattern = getattr(field, "schema_pattern", None)
        if schema is not None and pattern:
            schema["pattern"] = pattern
        return schema


class DecimalStringExtension(OpenApiSerializerFieldExtension):
    """exchange.fields.DecimalString: a request takes a positive decimal, exactly as the field parses it
    (no sign, exponent or spaces, at most 18 digits on either side of the point that are not leading or
    trailing zeros); a response gives a plain decimal, signed where the field says so."""

    target_class = "exchange.fields.DecimalString"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        if direction == "request":
            return {"type": "string", "format": "decimal", "pattern": POSITIVE_DECIMAL_PATTERN, "example": "0.01"}
        pattern = SIGNED_DECIMAL_OUTPUT_PATTERN if self.target.signed else DECIMAL_OUTPUT_PATTERN
        return {"type": "string", "format": "decimal", "pattern": pattern, "example": "63000.00"}

"""Refuses, in every /v1/ request and before any view reads them, control characters in the path and
query, and query parameters the operation does not take (exchange/queries.py); on the pages, a NUL in the
path or query."""

from django.http import HttpResponseBadRequest

from exchange.errors import InvalidParameter, InvalidRequest, error_json_response
from exchange.fields import has_control_character
from exchange.queries import check_names, declared_query, parameter_names, serves


class RefuseControlCharactersMiddleware:
    """A NUL, newline, DEL or other control character in a path is refused with ``400 INVALID_REQUEST``,
    in a query parameter with ``400 INVALID_PARAMETER`` naming it: no identifier or number holds one,
    and PostgreSQL cannot store NUL in text (a query with one fails). The pages (the admin's filters, say)
    get a plain 400 for a NUL: their forms refuse one in a body already."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/v1/"):
            if has_control_character(request.path):
                return error_json_response(InvalidRequest("The path holds a control character."))
            for name, values in request.GET.lists():
                if has_control_character(name) or any(has_control_character(value) for value in values):
                    return error_json_response(InvalidParameter(name, "Holds a control character."))
        elif "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):  # the query as sent
            return HttpResponseBadRequest("A NUL character in the address.", content_type="text/plain")
        return self.get_response(request)


class StrictQueryMiddleware:
    """A query parameter that the resolved operation does not declare, one given more than once and
    one left empty are ``400 INVALID_PARAMETER``, before authentication: like a control character,
    what the query holds is refused whoever sends it (and a signed request's nonce is not spent). A method
    the path does not take is left to DRF's 405, whatever its query."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_function, view_args, view_kwargs):
        if not request.GET or not request.path.startswith("/v1/") or not hasattr(view_function, "cls"):
            return None
        if not serves(view_function, request.method.lower()):
            return None
        try:
            check_names(request.GET, parameter_names(declared_query(view_function, request.method.lower())))
        except InvalidParameter as error:
            return error_json_response(error)
        return None

"""Refuses control characters in the path and query of every /v1/ request, before any view reads them."""

from exchange.errors import InvalidRequest, error_json_response
from exchange.fields import has_control_character


class RefuseControlCharactersMiddleware:
    """A NUL, newline, DEL or other control character in a path or query value is refused with
    ``400 INVALID_REQUEST``: no identifier or number holds one, and PostgreSQL cannot store NUL in
    text (a query with one fails)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/v1/"):
            if has_control_character(request.path):
                return error_json_response(InvalidRequest("The path holds a control character."))
            for name, values in request.GET.lists():
                if has_control_character(name) or any(has_control_character(value) for value in values):
                    return error_json_response(InvalidRequest("A query parameter holds a control character.",
                                                              parameter=name))
        return self.get_response(request)

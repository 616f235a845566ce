"""Python client for the exchange's REST API: signed requests, typed errors, safe retries."""

from hkt_client import errors
from hkt_client.client import Client
from hkt_client.errors import ApiError
from hkt_client.signing import prehash, sign, signed_headers

__all__ = ["ApiError", "Client", "errors", "prehash", "sign", "signed_headers"]
__version__ = "0.1.0"

"""Python client for the exchange's REST API (signed requests, typed errors, safe retries) and its
WebSocket order book (a local book kept in sync)."""

from hkt_client import errors
from hkt_client.book import BookError, BookFollower, ChecksumMismatch, LocalBook, SequenceGap, book_checksum
from hkt_client.client import Client
from hkt_client.errors import ApiError
from hkt_client.signing import prehash, sign, signed_headers

__all__ = [
    "ApiError", "BookError", "BookFollower", "ChecksumMismatch", "Client", "LocalBook", "SequenceGap", "book_checksum",
    "errors", "prehash", "sign", "signed_headers",
]
__version__ = "0.1.0"

"""The order book checksum of SPEC section 7, computed as Kraken's v2 book checksum is.

Top 10 asks from low to high, then top 10 bids from high to low; each price and size as the
decimal string the client received, with the point removed and leading zeros stripped,
concatenated; the unsigned CRC32 of that string.
"""

import zlib

CHECKSUM_DEPTH = 10


def compact(amount: str) -> str:
    return amount.replace(".", "").lstrip("0")


def book_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """``bids`` best (highest) first and ``asks`` best (lowest) first, as [price, size] strings."""
    text = "".join(compact(price) + compact(size) for price, size in [*asks[:CHECKSUM_DEPTH], *bids[:CHECKSUM_DEPTH]])
    return zlib.crc32(text.encode()) & 0xFFFFFFFF

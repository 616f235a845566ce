"""`hkt-sign METHOD PATH BODY TIMESTAMP NONCE`: print the X-Api-Signature for a request (SPEC section 3).

The secret is read from $HKT_SECRET, never from the command line, so it stays out of shell history
and process lists. Arguments are read by position, not argparse, so that a nonce starting with "-"
is not taken for an option.
"""

import os
import re
import sys

from hkt_client.signing import prehash, sign

USAGE = "usage: hkt-sign METHOD PATH BODY TIMESTAMP NONCE   (the key's secret in $HKT_SECRET; BODY may be '')"
NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def fail(message: str) -> int:
    print(f"hkt-sign: {message}\n{USAGE}", file=sys.stderr)
    return 2


def rebuild_body(words: list[str]) -> str:
    """The body as the product page's quick start passes it.

    Its `$(hkt_sign POST /v1/orders \\"$BODY\\" ...)` reaches us with literal quote characters around
    the body and, since $BODY is unquoted inside the substitution, split at its spaces: join the
    words back with single spaces and drop that one pair of quotes (a JSON object never starts with
    one). A properly quoted BODY arrives as one word and is used as it is.
    """
    body = " ".join(words)
    if len(body) >= 2 and body[0] == body[-1] == '"':
        body = body[1:-1]
    return body


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(args) < 5:
        return fail(f"expected 5 arguments, got {len(args)}")
    method, path, *body_words, timestamp, nonce = args
    body = rebuild_body(body_words)
    secret = os.environ.get("HKT_SECRET")
    if not secret:
        return fail("HKT_SECRET is not set")
    if not timestamp.isdigit():
        return fail("TIMESTAMP must be integer milliseconds since the epoch")
    if not NONCE.match(nonce):
        return fail("NONCE must be 8 to 64 characters of A-Z a-z 0-9 _ -")
    # surrogateescape gives back the exact bytes the shell passed, even if they are not valid UTF-8.
    print(sign(secret, prehash(timestamp, nonce, method, path, body.encode("utf-8", "surrogateescape"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

from sandbox.services import in_sandbox


def environment(request) -> dict:
    """``sandbox``: true when every page must say that its money is not real (base.html's banner)."""
    return {"sandbox": in_sandbox()}

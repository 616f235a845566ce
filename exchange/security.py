"""A Content-Security-Policy on every response, so that a script someone manages to inject into a page
(a crafted label, a compromised dependency's markup) does not run: the pages load scripts, styles, fonts
and connections from this site only (a third-party asset is a pinned copy among our static files), run
no inline script or style attribute (the templates have none; market.js sets its bars' widths through
the style object), post forms only here, and are framed by nobody. Swagger UI's icons are data: images.
Django's admin needs nothing more (5.2 ships no inline script or style)."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

"""The API reference (Swagger UI at /v1/docs) loads everything from this server: it works on a machine
without internet, and tells no CDN of the visit. (Redoc is not served: its bundle always loads a logo
from cdn.redoc.ly.)"""

import re
import shutil
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client

from .csp import csp_violations, watch_csp

DOC_PAGES = {"/v1/docs": ".opblock"}  # page: what shows it rendered the API from the schema
CHROMIUM = shutil.which("chromium")


class References(HTMLParser):
    """Every src and href of a page."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def client_serving_static(settings):
    """A client whose requests for /static/ go through WhiteNoise as in production, finding the files where
    collectstatic would (tests do not run collectstatic)."""
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True
    return Client()


@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_page_references_only_files_this_server_serves(client_serving_static, page):
    response = client_serving_static.get(page)

    assert response.status_code == 200
    html = response.content.decode()
    urls = references(html)
    assert any(url.endswith(".js") for url in urls), urls  # the viewer itself, as a file of ours
    assert not re.search(r"https?://|//[a-z]", html, re.IGNORECASE), "an absolute URL in the page"
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
        if url != "/v1/docs.js":  # the viewer's start-up script, made per visitor (exchange/apidocs.py)
            assert parts.path.startswith(settings.STATIC_URL) and finders.find(
                parts.path.removeprefix(settings.STATIC_URL)), url
        served = client_serving_static.get(url)
        assert served.status_code == 200, url
        assert b"".join(served.streaming_content) if served.streaming else served.content, url


def test_schema_the_pages_read_is_served_here(client):
    for page in DOC_PAGES:
        assert '<script src="/v1/docs.js"></script>' in client.get(page).content.decode()
    assert 'url: "/v1/openapi.json"' in client.get("/v1/docs.js").content.decode()
    assert client.get("/v1/openapi.json").json()["openapi"].startswith("3.")


def test_favicon_is_ours_and_linked_from_every_page(client_serving_static):
    icon = client_serving_static.get("/favicon.ico", follow=True)

    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(icon.streaming_content)
    assert icon.redirect_chain == [("/static/favicon.svg", 302)]
    for page in ["/account/login/", "/account/signup/"]:
        assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in client_serving_static.get(
            page).content.decode(), page


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")
@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_page_in_a_browser_asks_nothing_of_any_other_server(live_server, page):
    from playwright.sync_api import sync_playwright

    requested = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page()
        watch_csp(tab)
        tab.on("request", lambda request: requested.append(request.url))
        tab.goto(f"{live_server.url}{page}")
        tab.wait_for_selector(DOC_PAGES[page], timeout=20_000)  # the API rendered from its schema
        tab.wait_for_load_state("networkidle")
        violations = csp_violations(tab)
        browser.close()

    assert violations == []  # rendered under the pages' Content-Security-Policy
    assert f"{live_server.url}/v1/openapi.json" in requested
    elsewhere = [url for url in requested
                 if not url.startswith(f"{live_server.url}/") and urlsplit(url).scheme not in {"data", "blob"}]
    assert elsewhere == []

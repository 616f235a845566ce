from openapi_spec_validator import validate

from exchange.errors import ErrorCode


def test_served_openapi_document_is_valid_and_complete(api, db):
    response = api.get("/v1/openapi.json")

    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path in ["/v1/time", "/v1/markets", "/v1/ticker/{pair}", "/v1/orderbook/{pair}", "/v1/trades/{pair}"]:
        assert "get" in paths[path], path
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}
    assert "UNKNOWN_PAIR` - 404" in schemas["ErrorCode"]["description"]
    book = paths["/v1/orderbook/{pair}"]["get"]
    assert set(book["responses"]) == {"200", "400", "403", "404", "429", "500"}
    assert book["responses"]["404"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    assert {p["name"] for p in book["parameters"]} == {"pair", "depth"}


def test_docs_page_is_served(client, db):
    response = client.get("/v1/docs")

    assert response.status_code == 200
    assert b"/v1/openapi.json" in response.content

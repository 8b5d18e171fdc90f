"""The dashboard only reads: traversal and injection in every parameter get 4xx, no route writes, the token holds."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from archetype.dashboard.app import create_app

ATTACKS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..\\..\\etc\\passwd",
    "....//....//etc/passwd",
    "1 OR 1=1",
    "'; DROP TABLE trials; --",
    "\" OR \"\"=\"",
    "1; DELETE FROM studies",
]

ROUTES = [  # (template, the valid value of each path parameter)
    ("/api/studies/{name}", {"name": "study"}),
    ("/api/studies/{name}/trials", {"name": "study"}),
    ("/api/studies/{name}/trials/{number}", {"name": "study", "number": "1"}),
    ("/api/compressions/{name}", {"name": "run"}),
    ("/studies/{name}", {"name": "study"}),
    ("/studies/{name}/trials/{number}", {"name": "study", "number": "1"}),
    ("/compressions/{name}", {"name": "run"}),
    ("/static/{filename}", {"filename": "dashboard.js"}),
]
QUERY = {"state": "complete", "budget": "within", "sort": "accuracy", "order": "desc", "offset": "0", "limit": "5"}


@pytest.fixture(scope="module")
def client(filled) -> TestClient:
    return TestClient(create_app(filled.store))


def _valid(filled, params: dict[str, str]) -> dict[str, str]:
    real = {"study": filled.report.study.name, "run": filled.run}
    return {key: real.get(value, value) for key, value in params.items()}


def _fill(template: str, params: dict[str, str], raw: str | None = None) -> str:
    path = template
    for key, value in params.items():
        path = path.replace(f"{{{key}}}", value if key == raw else quote(value, safe=""))
    return path


def test_every_valid_route_answers(client, filled) -> None:
    for template, params in ROUTES:
        assert client.get(_fill(template, _valid(filled, params))).status_code == 200, template
    assert client.get(f"/api/studies/{filled.report.study.name}/trials", params=QUERY).status_code == 200


@pytest.mark.parametrize(("template", "params"), ROUTES)
def test_traversal_and_injection_in_path_parameters_are_4xx(client, filled, snapshot, template, params) -> None:
    before = snapshot(filled.store)
    valid = _valid(filled, params)
    for name in params:
        for attack in ATTACKS:
            for raw in (True, False):  # as typed, and percent-encoded once more
                path = _fill(template, {**valid, name: attack}, raw=name if raw else None)
                response = client.get(path)
                assert 400 <= response.status_code < 500, (path, response.status_code)
                assert "root:" not in response.text
    assert snapshot(filled.store) == before


@pytest.mark.parametrize("parameter", sorted(QUERY))
def test_traversal_and_injection_in_query_parameters_are_4xx(client, filled, snapshot, parameter) -> None:
    before = snapshot(filled.store)
    url = f"/api/studies/{filled.report.study.name}/trials"
    for attack in [*ATTACKS, "-1", "100000000000", ""]:
        response = client.get(url, params={**QUERY, parameter: attack})
        assert 400 <= response.status_code < 500, (parameter, attack, response.status_code)
    assert snapshot(filled.store) == before


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_route_writes(client, filled, snapshot, method) -> None:
    before = snapshot(filled.store)
    for template, params in [*ROUTES, ("/api/studies", {}), ("/", {})]:
        response = client.request(method, _fill(template, _valid(filled, params)), json={"status": "failed"})
        assert response.status_code == 405, (method, template)
    assert snapshot(filled.store) == before


def test_the_token_is_required_on_every_route_when_set(filled) -> None:
    client = TestClient(create_app(filled.store, token="s3cret/+&"))
    paths = [_fill(t, _valid(filled, p)) for t, p in ROUTES] + ["/", "/api/studies", "/api/openapi.json"]
    for path in paths:
        assert client.get(path).status_code == 401, path
        assert client.get(path, params={"token": "wrong"}).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
        assert client.get(path, params={"token": "s3cret/+&"}).status_code == 200, path
        assert client.get(path, headers={"Authorization": "Bearer s3cret/+&"}).status_code == 200, path
    page = client.get("/", params={"token": "s3cret/+&"}).text
    assert "/static/dashboard.js?token=s3cret%2F%2B%26" in page  # the page passes the token on


def test_pages_escape_what_the_store_holds(filled) -> None:
    from archetype.objectives import DEFAULT_OBJECTIVES
    from archetype.store import Store

    with Store.open(f"sqlite:///{filled.url.removeprefix('sqlite:///')}.xss.db") as store:
        name = '<img src=x onerror=alert(1)>'
        store.create_study(name, space="s", target="t", objectives=DEFAULT_OBJECTIVES, constraints=[], spec={})
        page = TestClient(create_app(store)).get(f"/studies/{quote(name, safe='')}")
        assert page.status_code == 200 and "<img src=x" not in page.text
        assert "&lt;img src=x onerror=alert(1)&gt;" in page.text

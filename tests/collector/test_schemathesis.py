"""Schemathesis against the collector's own OpenAPI document: no input gets a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error, response_schema_conformance

from .conftest import TOKEN, LiveServer


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def api_schema(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    make_report: Any,
) -> Iterator[Any]:
    """A live collector with a few stored reports, and its OpenAPI schema."""
    from tlspin.collector import Settings, create_app

    from .conftest import _pg_schema

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis')}/api.db"
        context: Any = None
    else:
        context = _pg_schema()
        url = context.__enter__()
    server = LiveServer(create_app(Settings(db_url=url, token=TOKEN,
                                            ip_rate_limit=(1_000_000, 1.0))))
    try:
        with server.client() as client:
            for i in range(3):
                client.post("/reports", json=make_report(app_id=f"app-{i}"))
            client.post("/api/monitor-runs", json={
                "run": {"started_at": "2024-01-01T00:00:00Z"},
                "results": [{"endpoint": "a.test:443", "host": "a.test", "port": 443,
                             "status": "green"}]})
        yield schemathesis.openapi.from_url(server.url + "/openapi.json")
    finally:
        server.stop()
        server.state.db.dispose()
        if context is not None:
            context.__exit__(None, None, None)


def test_no_input_gets_a_server_error(api_schema: Any) -> None:
    """Generated requests (valid and invalid, authenticated) never get a 5xx; every response
    matches its documented schema."""
    from schemathesis import GenerationMode

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=8, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    checks=[not_a_server_error, response_schema_conformance],
                    timeout=30,
                )

            try:
                run()
            except Unsatisfiable:
                # No invalid input exists for operations without parameters or body.
                assert mode is GenerationMode.NEGATIVE, operation.label

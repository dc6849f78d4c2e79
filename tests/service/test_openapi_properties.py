"""Property-based tests against the server's own OpenAPI spec (schemathesis + hypothesis): for generated
requests to every operation, no server error, documented status codes and content types, and responses that
match their schemas.

Schemathesis' ``positive_data_acceptance`` check is left out: a schema-valid upload is arbitrary bytes, which
the service rightly rejects (400 bad audio, 422 unknown label); the spec cannot say what decodes as audio."""

from __future__ import annotations

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks


def test_every_operation_conforms_to_the_spec(server):
    spec = requests.get(f"{server.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    headers = {"Authorization": f"Bearer {server.key}"}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            case.call_and_validate(base_url=server.url, headers=headers, timeout=60,
                                   excluded_checks=[checks.positive_data_acceptance])

        conforms()
        tested.append(operation.label)
    assert len(tested) == sum(len(ops) for ops in spec["paths"].values()) >= 11

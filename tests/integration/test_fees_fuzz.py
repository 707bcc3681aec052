"""The fee and consolidating-accountant operations' OpenAPI contract under generated requests (the
whole API's run is tests/integration/test_api_fuzz.py; this one covers only these operations, quick
to run alone)."""

from __future__ import annotations

from typing import Any

import pytest
from schemathesis.generation.modes import GenerationMode

from tests.integration.test_api_fuzz import api, api_schema, failures_of, tenant_key  # noqa: F401

pytestmark = pytest.mark.integration

PATHS = (
    "/v1/fee-collections",
    "/v1/reconciliation/fees",
    "/v1/integrations/super-accountant/",
    "/v1/financial-reports",
)


def test_fee_operations_answer_generated_requests_as_documented(api_schema: Any, tenant_key: str) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {tenant_key}"}
    operations = [op for op in (r.ok() for r in api_schema.get_all_operations()) if op.path.startswith(PATHS)]
    assert len(operations) == 10, [op.label for op in operations]
    statuses: dict[int, int] = {}
    found = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for failure in failures_of(operation, mode, headers, statuses)
    ]
    assert not any(status >= 500 for status in statuses), statuses
    assert not found, "\n\n".join(found[:10])

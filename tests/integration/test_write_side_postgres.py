"""The write side's event-store command paths on the real PostgreSQL event store: the same suite as
tests/unit/test_write_side_in_memory.py, with the service ``build_service`` makes for the test's schema."""

from __future__ import annotations

from typing import Any

import pytest

from engine.application import LedgerService
from tests.write_side_contract import LedgerServiceContract


class TestLedgerServiceOnPostgres(LedgerServiceContract):
    @pytest.fixture
    def ledger_service(self, service: Any) -> LedgerService:
        assert isinstance(service, LedgerService)
        return service

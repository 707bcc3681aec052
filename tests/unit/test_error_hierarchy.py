"""Every error the engine defines sits in the one hierarchy of engine/errors.py, and the API's status
follows the family an error belongs to."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import engine
from engine import application as svc
from engine import errors
from engine.api.errors import STATUS_OF, status_of


def engine_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(engine.__path__, prefix="engine."))


def exceptions_defined_in_engine() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for name in engine_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found.append(value)
    return found


def test_the_walk_finds_the_errors_the_engine_is_known_to_define() -> None:
    # Guards the walk itself: if it found nothing, the next test would pass vacuously.
    names = {e.__qualname__ for e in exceptions_defined_in_engine()}
    assert {"DatabaseUnavailable", "ServiceError", "TaxRuleError", "UnencodableEvent", "ApiError"} <= names


def test_every_exception_defined_in_the_engine_derives_from_ledgerflow_error() -> None:
    strays = [
        f"{e.__module__}.{e.__qualname__}"
        for e in exceptions_defined_in_engine()
        if not issubclass(e, errors.LedgerflowError)
    ]
    assert strays == [], f"derive these from a family in engine/errors.py: {strays}"


FAMILIES = (errors.RequestRefused, errors.Unavailable, errors.ConfigurationError, errors.IntegrityFault)


@pytest.mark.parametrize(
    "error", [e for e in exceptions_defined_in_engine() if e not in vars(errors).values()], ids=str
)
def test_every_engine_error_belongs_to_exactly_one_family(error: type[BaseException]) -> None:
    assert sum(issubclass(error, family) for family in FAMILIES) == 1


def test_errors_module_imports_nothing_from_the_engine() -> None:
    # The pure packages (engine.tax, engine.domain) derive their errors from it.
    source = inspect.getsource(errors)
    assert "import engine" not in source and "from engine" not in source


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (svc.ValidationFailed(()), 422),
        (svc.IdempotencyKeyReused("reused"), 422),
        (svc.TenantNotFound("no tenant"), 404),
        (svc.InvoiceNotFound("no invoice"), 404),
        (svc.ApiKeyNotFound("no key"), 404),
        (svc.DuplicateInvoiceNumber("taken"), 409),
        (svc.IdempotencyKeyInProgress("busy"), 409),
        (svc.InvoiceStateConflict("cancelled"), 409),
        (svc.ApiKeyConflict("last key"), 409),
        (svc.IntegrationNotConfigured("none"), 409),
        (svc.TenantChangedConcurrently("race"), 409),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_the_api_answers_each_service_error_with_the_status_of_its_family(
    error: svc.ServiceError, status: int
) -> None:
    assert status_of(error) == status


def test_a_service_error_in_no_mapped_family_answers_400() -> None:
    class Unmapped(svc.ServiceError):
        pass

    assert not any(issubclass(Unmapped, family) for family in STATUS_OF)
    assert status_of(Unmapped("odd")) == 400


def test_old_import_paths_still_name_the_same_classes() -> None:
    from engine.db import DatabaseUnavailable, MigrationsNotRegistered, SchemaNotMigrated
    from engine.integrations import IntegrationError, ProvidersNotRegistered
    from engine.tax.errors import TaxRuleError

    assert issubclass(SchemaNotMigrated, DatabaseUnavailable)
    assert issubclass(DatabaseUnavailable, errors.Unavailable)
    assert issubclass(MigrationsNotRegistered, RuntimeError)
    assert issubclass(ProvidersNotRegistered, errors.ConfigurationError)
    assert issubclass(TaxRuleError, ValueError) and issubclass(TaxRuleError, errors.InvalidInput)
    assert issubclass(IntegrationError, errors.RequestRefused)

"""The OpenAPI contract's responses: every operation declares each status it can answer, with a
schema, and every error status the one error shape.

Routes are declared where they live (``app.py``, ``reports.py``, ``metrics.py``, ``health.py``);
this module completes the generated document afterwards instead of repeating ``responses=`` on
each of them, so a new route gets its error statuses without anyone remembering to:

- every operation: 413 (body over the limit, refused by the middleware before routing), 422
  (validation: FastAPI's own ``HTTPValidationError`` is replaced, since errors never take that
  shape here) and 500; with a request body also 400 (a body that cannot be read);
- operations behind an API key or the operators' token: 401; behind PostgreSQL: 503;
- operations with a path parameter: 404; commands that can conflict: 409.

Success bodies that the handlers build as plain dicts (for speed: see ``json_response``) get
their schema from the models here, which are documentation only: they are never used to
validate or serialise a response, so they must follow the handlers (``test_api_fuzz`` checks
that every answer matches).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
from uuid import UUID

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from engine.commands import IssueCreditNote, IssueGstNote, IssueInvoice, IssueKenyanInvoice


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable reason, e.g. validation_failed, not_found, unauthorized")
    message: str = Field(description="For a person: what is wrong and what to do")
    details: dict[str, Any] = Field(
        description="Specifics of the error, e.g. fields: [{path, code, message}] for validation_failed"
    )
    timestamp: str = Field(description="When it happened, ISO 8601 in UTC ('Z')")
    request_id: str | None = Field(description="The request's X-Request-ID, also in the response header")


class ErrorBody(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorDetail


class InvoiceView(BaseModel):
    """An invoice with its computed taxes. Amounts and rates are decimal strings."""

    model_config = ConfigDict(extra="allow")

    id: UUID
    number: str | None = Field(description="null on a draft: the series numbers it when it is issued")
    financial_year: str
    date: date
    currency: str
    supply_type: str
    seller: dict[str, Any]
    buyer: dict[str, Any]
    place_of_supply: str | None = Field(default=None, description="GST only; absent on Kenyan invoices")
    intra_state: bool | None = Field(default=None, description="GST only; absent on Kenyan invoices")
    lines: list[dict[str, Any]]
    totals: dict[str, str | None]
    status: Literal["issued", "cancelled", "draft", "discarded"]
    cancellation: dict[str, Any] | None
    einvoice: dict[str, Any] | None = Field(description="The IRN and signed documents, or why there is none")
    etims: dict[str, Any] | None = Field(
        default=None,
        description="Kenyan invoices only (absent on Indian ones): status pending|signed|failed|voided, "
        "environment, branch_id, invc_no, receipt_no, internal_data, receipt_signature, sdc_id, qr_url, "
        "failure {code, message} | null",
    )


# POST /v1/invoices: the body's shape depends on the tenant's country (engine/commands.py).
REQUEST_MODELS: list[type[BaseModel]] = [IssueInvoice, IssueKenyanInvoice]
ISSUE_BODY: dict[str, Any] = {
    "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in REQUEST_MODELS],
    "description": "IssueInvoice for Indian tenants, IssueKenyanInvoice for Kenyan (KE) tenants",
}
# POST /v1/invoices/{id}/credit-notes: likewise (an Indian note, or a Kenyan eTIMS credit note).
NOTE_MODELS: list[type[BaseModel]] = [IssueGstNote, IssueCreditNote]
NOTE_BODY: dict[str, Any] = {
    "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in NOTE_MODELS],
    "description": "IssueGstNote for Indian tenants, IssueCreditNote for Kenyan (KE) tenants",
}


class InvoicePage(BaseModel):
    items: list[InvoiceView]
    next: str | None = Field(description="The cursor of the next page; null on the last page")


class ReportPage(BaseModel):
    items: list[dict[str, Any]] = Field(description="Rows: column name -> value (see GET /v1/reports)")
    next: str | None = Field(description="The cursor of the next page; null on the last page")


MODELS: list[type[BaseModel]] = [ErrorBody, InvoiceView, InvoicePage, ReportPage]

ERROR_DESCRIPTIONS = {
    "400": "The request body could not be read",
    "401": "No or an unknown credential (API key, or the operators' token where one is set)",
    "403": "Onboarding is off (no LEDGERFLOW_OPERATOR_TOKEN), or a tenant API key was sent instead of it;"
    " or the tenant's eTIMS gateway operator suspended it (company_suspended)",
    "404": "No such resource (for this tenant)",
    "409": "Conflicts with the current state (duplicate number, already cancelled, key in use)",
    "413": "The request body is larger than LEDGERFLOW_MAX_BODY_BYTES",
    "422": "The request is invalid: details.fields says which field and why",
    "500": "An unexpected error; it has been logged under the request id",
    "503": "PostgreSQL or Kafka is unreachable for now; retry after Retry-After seconds",
}

# Operations whose success body is one of the models above: (method, path) -> (status, model).
SUCCESS: dict[tuple[str, str], tuple[str, type[BaseModel]]] = {
    ("post", "/v1/invoices"): ("201", InvoiceView),
    ("get", "/v1/invoices"): ("200", InvoicePage),
    ("get", "/v1/invoices/{invoice_id}"): ("200", InvoiceView),
    ("post", "/v1/invoices/{invoice_id}/cancel"): ("200", InvoiceView),
    ("post", "/v1/invoices/{invoice_id}/credit-notes"): ("201", InvoiceView),
    ("post", "/v1/invoices/{invoice_id}/debit-notes"): ("201", InvoiceView),
    ("get", "/v1/reports/{name}"): ("200", ReportPage),
}
CONFLICTS = {
    ("post", "/v1/invoices"),
    ("post", "/v1/invoices/{invoice_id}/cancel"),
    # A note number already used, a cancelled original, a concurrent credit note retried out.
    ("post", "/v1/invoices/{invoice_id}/credit-notes"),
    ("post", "/v1/invoices/{invoice_id}/debit-notes"),
    ("delete", "/v1/tenant/api-keys/{key_id}"),  # the tenant's last key
    # A tenant changed by two requests at once: the later one is 409 concurrent_update.
    ("patch", "/v1/tenant"),
    ("post", "/v1/tenant/api-keys"),
    ("post", "/v1/tenant/api-keys/{key_id}/rotate"),
    ("put", "/v1/integrations/{provider}"),
    # eTIMS: 409 etims_not_configured until the tenant saved its etims integration.
    ("post", "/v1/etims/devices"),
    ("post", "/v1/etims/codes/sync"),
    ("post", "/v1/etims/items"),
    # 409 sync_not_supported / integration_disabled (engine/api/integration_health.py).
    ("post", "/v1/integrations/{provider}/sync"),
    # Drafts (issue 13): only a draft changes, and an issue may find the series busy or exhausted.
    ("patch", "/v1/invoices/{invoice_id}"),
    ("delete", "/v1/invoices/{invoice_id}"),
    ("post", "/v1/invoices/{invoice_id}/issue"),
}
OPERATORS = {"/metrics", "/healthz/consumers"}  # behind the operators' token when one is set
# Behind the operator token (LEDGERFLOW_OPERATOR_TOKEN), off without it.
ONBOARDING = {
    "/v1/tenants",
    "/v1/etims/onboard",
    "/v1/etims/companies/{tenant_id}/suspend",
    "/v1/etims/companies/{tenant_id}/resume",
}
NEEDS_DATABASE = {"/readyz", "/healthz/consumers", *ONBOARDING}
TEXT_BODIES = {"text/csv", "text/plain"}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _statuses(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    tenant = bool(operation.get("security"))
    statuses = ["413", "422", "500"]
    if "requestBody" in operation:
        statuses.append("400")
    if tenant or path in OPERATORS or path in ONBOARDING:
        statuses.append("401")
    if path in ONBOARDING or tenant:
        # A tenant's key is refused with 403 company_suspended while its operator suspends it.
        statuses.append("403")
    if "{" in path:
        statuses.append("404")
    if (method, path) in CONFLICTS:
        statuses.append("409")
    if tenant or path in NEEDS_DATABASE:
        statuses.append("503")
    return sorted(statuses)


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Declare the error statuses and the success schemas of every operation in ``document``."""
    _, defs = models_json_schema(
        [(m, "serialization") for m in MODELS], ref_template="#/components/schemas/{model}"
    )
    _, request_defs = models_json_schema(
        [(m, "validation") for m in [*REQUEST_MODELS, *NOTE_MODELS]],
        ref_template="#/components/schemas/{model}",
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in request_defs.get("$defs", {}).items():
        # FastAPI's own rendering of a request model another route uses (Address) wins: the two
        # differ only in how they spell defaults.
        schemas.setdefault(name, definition)
    for name, definition in defs.get("$defs", {}).items():
        # A request model of the same name would otherwise be silently replaced.
        if schemas.get(name, definition) != definition:
            raise RuntimeError(f"two different OpenAPI schemas are named {name}")
        schemas[name] = definition
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for status in _statuses(method, path, operation):
                responses[status] = {
                    "description": ERROR_DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": _ref(ErrorBody)}},
                }
            if (method, path) in SUCCESS:
                status, model = SUCCESS[(method, path)]
                success = responses.setdefault(status, {"description": "OK"})
                success.setdefault("content", {}).setdefault("application/json", {})["schema"] = _ref(model)
            for response in responses.values():
                for media_type, content in response.get("content", {}).items():
                    if media_type.split(";")[0] in TEXT_BODIES and not content.get("schema"):
                        content["schema"] = {"type": "string"}
    # FastAPI's default validation error shape is never answered here.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install(app: FastAPI) -> None:
    """Serve the completed document at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

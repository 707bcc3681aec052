"""``/v1/bank``: the tenant's bank statements, transactions and balances (issue 12).

* ``POST /v1/bank/statements[?format=mt940|camt.053]``: the file as the request body (MT940 text or
  camt.053 XML; without ``format`` an XML body is camt.053, anything else MT940). 201 with, per
  statement, the lines found, how many were new (``imported``) and the balance check
  (``balanced``, ``computed_closing``, ``difference``); a statement that does not add up is
  also raised as an alert. Uploading the same or an overlapping statement again imports nothing twice.
* ``GET /v1/bank/accounts/{account}/balance``: the newest balance known (the bank's balance API or
  the closing balance of the newest statement), with its time and source.
* ``GET /v1/bank/transactions?account=&from=&to=&limit=``: statement lines by value date.
"""

# No ``from __future__ import annotations``: FastAPI must evaluate the route signatures.
import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from connectors.bank import statement_formats, statements
from engine import db
from engine.api.errors import ApiError
from engine.application import LedgerService

MAX_LIMIT = 5000
ACCOUNT_PATTERN = r"^[A-Za-z0-9]{4,34}$"


def _not_migrated() -> ApiError:
    return ApiError(
        409, "bank_not_configured", "this deployment has no bank tables: run `ledgerflow db migrate`"
    )


def build_router(
    current_tenant: Callable[..., Awaitable[UUID]],
    service: Callable[[], Awaitable[LedgerService]],
) -> APIRouter:
    router = APIRouter(prefix="/v1/bank", tags=["bank"])
    tenant_dep = Annotated[UUID, Depends(current_tenant)]
    service_dep = Annotated[LedgerService, Depends(service)]

    @router.post("/statements", status_code=201, summary="Upload an MT940 or camt.053 statement")
    async def upload(
        request: Request,
        tenant_id: tenant_dep,
        svc: service_dep,
        format: Annotated[Literal["mt940", "camt.053"] | None, Query()] = None,
    ) -> dict[str, Any]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > statement_formats.MAX_BYTES:
                raise ApiError(
                    413,
                    "payload_too_large",
                    f"a statement file is at most {statement_formats.MAX_BYTES} bytes",
                )
        if not body.strip():
            raise ApiError(422, "validation_failed", "the request body must be the statement file")
        try:
            parsed = statement_formats.parse(body, format)
        except statement_formats.StatementError as exc:
            raise ApiError(
                422,
                "invalid_statement",
                f"not a readable {format or 'MT940 or camt.053'} statement: {exc}"[:500],
            ) from exc
        try:
            results = await run_in_threadpool(statements.import_statements, svc, tenant_id, parsed)
        except psycopg.errors.UndefinedTable as exc:
            raise _not_migrated() from exc
        documents = [r.document() for r in results]
        return {"statements": documents, "balanced": all(d["balanced"] for d in documents)}

    @router.get("/accounts/{account}/balance", summary="The newest known balance of an account")
    def balance(account: str, tenant_id: tenant_dep, svc: service_dep) -> dict[str, Any]:
        if not _account_ok(account):
            raise ApiError(404, "not_found", "no balance known for that account")
        try:
            with db.transaction(svc.pool) as conn:
                row = conn.execute(
                    "SELECT balance, currency, as_of, source FROM bank_balances"
                    " WHERE tenant_id = %s AND account = %s",
                    (tenant_id, account),
                ).fetchone()
        except psycopg.errors.UndefinedTable as exc:
            raise _not_migrated() from exc
        if row is None:
            raise ApiError(404, "not_found", "no balance known for that account")
        found = dict(row)
        return {
            "account": account,
            "balance": f"{found['balance']:.2f}",
            "currency": found["currency"],
            "as_of": found["as_of"].isoformat(),
            "source": found["source"],
        }

    @router.get("/transactions", summary="Bank statement lines by value date")
    def transactions(
        tenant_id: tenant_dep,
        svc: service_dep,
        account: Annotated[str, Query(pattern=ACCOUNT_PATTERN)],
        from_: Annotated[date | None, Query(alias="from")] = None,
        to: Annotated[date | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
    ) -> dict[str, Any]:
        query = "SELECT * FROM bank_transactions WHERE tenant_id = %s AND account = %s"
        params: list[Any] = [tenant_id, account]
        if from_ is not None:
            query += " AND value_date >= %s"
            params.append(from_)
        if to is not None:
            query += " AND value_date <= %s"
            params.append(to)
        query += " ORDER BY value_date, statement_id, position, transaction_id LIMIT %s"
        params.append(limit)
        try:
            with db.transaction(svc.pool) as conn:
                rows = [dict(r) for r in conn.execute(query, params).fetchall()]
        except psycopg.errors.UndefinedTable as exc:
            raise _not_migrated() from exc
        return {
            "items": [
                {
                    "id": str(r["transaction_id"]),
                    "account": r["account"],
                    "value_date": r["value_date"].isoformat(),
                    "booking_date": r["booking_date"].isoformat() if r["booking_date"] else None,
                    "amount": f"{r['amount']:.2f}",
                    "currency": r["currency"],
                    "reference": r["reference"],
                    "description": r["description"],
                    "position": r["position"],
                    "statement_id": str(r["statement_id"]),
                }
                for r in rows
            ]
        }

    return router


def _account_ok(account: str) -> bool:
    return re.match(ACCOUNT_PATTERN, account) is not None

"""A local Tally Prime: its XML-over-HTTP interface on one port, with the shared fault kit.

``python -m connectors.tally.sandbox --port 9162``. Like Tally, it takes every request as ``POST /``
with an XML ``ENVELOPE`` and answers 200 with XML whatever became of it:

* ``Import Data`` / ``Vouchers`` into a loaded company (``SVCURRENTCOMPANY``): each ``VOUCHER`` is
  checked as Tally checks it (the voucher type and every ledger must exist in the company, debits must
  equal credits) and refused with a ``LINEERROR`` otherwise; a ``REMOTEID`` the company already holds
  replaces that voucher and counts as ALTERED, never as a second voucher. The answer is Tally's
  ``RESPONSE`` with CREATED, ALTERED, ERRORS... counters. Stricter than Tally on one point: a leg whose
  ``ISDEEMEDPOSITIVE`` contradicts its ``AMOUNT``'s sign is refused, to catch a sign-convention bug.
* ``Export Data`` / ``List of Accounts``: the company's ledgers as ``TALLYMESSAGE/LEDGER`` masters.
* An unknown company is answered with a LINEERROR, as Tally does when it cannot set SVCurrentCompany.

Operator endpoints (under ``/_sandbox``, never faulted): ``PUT /_sandbox/tally/companies/{name}/ledgers``
loads a company with ledgers, ``GET .../vouchers`` lists what it holds, and ``POST /_sandbox/tally/load``
makes it slow under load: while more than ``busy_above`` requests are in flight, a request is held
``slow_s`` seconds (10 s is what users report of Tally) and then done anyway, as Tally finishes a
request its caller stopped waiting for.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field

from connectors.sandbox_kit import SandboxKit

DEMO_COMPANY = "Ledgerflow Demo College"
DEMO_LEDGERS: tuple[tuple[str, str], ...] = (
    ("ICICI Bank", "Bank Accounts"),
    ("Cash", "Cash-in-Hand"),
    ("Sales", "Sales Accounts"),
    ("Output CGST", "Duties & Taxes"),
    ("Output SGST", "Duties & Taxes"),
    ("Output IGST", "Duties & Taxes"),
    ("Output Cess", "Duties & Taxes"),
    ("Sundry Customers", "Sundry Debtors"),
    ("Tech Supplies Ltd", "Sundry Creditors"),
    ("Office Supplies", "Indirect Expenses"),
)
DEMO_LEDGER_MAP = {
    "bank": "ICICI Bank",
    "sales": "Sales",
    "output_cgst": "Output CGST",
    "output_sgst": "Output SGST",
    "output_igst": "Output IGST",
    "output_cess": "Output Cess",
    "debtors": "Sundry Customers",
}
# Tally's predefined voucher types (a new company has these; F11 may hide some).
VOUCHER_TYPES = frozenset(
    {"Sales", "Receipt", "Payment", "Journal", "Purchase", "Credit Note", "Debit Note", "Contra"}
)
EFFECTS = ("voucher_created", "voucher_altered", "budget_created", "budget_altered")


@dataclass
class Company:
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)
    vouchers: dict[str, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1


class LedgerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    parent: Annotated[str, Field(max_length=200)] = "Suspense A/c"
    opening_balance: Decimal = Decimal("0")


class LedgersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ledgers: list[LedgerIn]


class Load(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slow_s: Annotated[float, Field(ge=0.0, le=120.0)] = 0.0
    busy_above: Annotated[int, Field(ge=0)] = 0
    """Requests in flight (this one included) above which a request is slow; 0: every request."""
    slow_requests: Annotated[int | None, Field(ge=0)] = None
    """Stop being slow after this many slow requests (None: stay slow)."""


class TallyState:
    def __init__(self) -> None:
        self.companies: dict[str, Company] = {}
        self.load = Load()
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.companies = {DEMO_COMPANY: demo_company()}
        self.load = Load()
        self.in_flight = 0


def demo_company() -> Company:
    company = Company()
    for name, parent in DEMO_LEDGERS:
        company.ledgers[name] = {"name": name, "parent": parent, "opening_balance": Decimal("0")}
    return company


def _parser() -> Any:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
    )


def _text(node: Any, path: str) -> str:
    found = node.find(path)
    return (found.text or "").strip() if found is not None else ""


def _answer(counts: dict[str, int], errors: list[str], last_id: int = 0) -> Response:
    root = etree.Element("RESPONSE")
    for message in errors:
        etree.SubElement(root, "LINEERROR").text = message
    for name in ("CREATED", "ALTERED", "DELETED"):
        etree.SubElement(root, name).text = str(counts.get(name, 0))
    etree.SubElement(root, "LASTVCHID").text = str(last_id)
    etree.SubElement(root, "LASTMID").text = "0"
    for name in ("COMBINED", "IGNORED", "ERRORS", "CANCELLED"):
        etree.SubElement(root, name).text = str(counts.get(name, 0))
    return Response(etree.tostring(root, encoding="UTF-8"), media_type="text/xml")


def _error(message: str) -> Response:
    return _answer({"ERRORS": 1}, [message])


def _amount(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _voucher_problem(company: Company, voucher: Any) -> tuple[str | None, dict[str, Any]]:
    """What Tally would refuse in ``voucher`` (None: nothing), and the voucher as stored."""
    kind = voucher.get("VCHTYPE") or _text(voucher, "VOUCHERTYPENAME")
    if kind not in VOUCHER_TYPES:
        return f"Voucher Type '{kind}' does not exist!", {}
    day = _text(voucher, "DATE")
    try:
        parsed = date(int(day[:4]), int(day[4:6]), int(day[6:8])) if len(day) == 8 and day.isdigit() else None
    except ValueError:
        parsed = None
    if parsed is None:
        return f"Invalid date '{day[:20]}'", {}
    legs: list[dict[str, Any]] = []
    for entry in voucher.findall("ALLLEDGERENTRIES.LIST") + voucher.findall("LEDGERENTRIES.LIST"):
        name = _text(entry, "LEDGERNAME")
        if name not in company.ledgers:
            return f"Ledger '{name}' does not exist!", {}
        amount = _amount(_text(entry, "AMOUNT"))
        deemed_positive = _text(entry, "ISDEEMEDPOSITIVE").lower() == "yes"
        if amount is None:
            return f"Invalid amount for ledger '{name}'", {}
        if amount != 0 and deemed_positive != (amount < 0):
            return f"Ledger '{name}': ISDEEMEDPOSITIVE does not match the sign of AMOUNT", {}
        legs.append({"ledger": name, "amount": amount, "is_deemed_positive": deemed_positive})
    if len(legs) < 2:
        return "Voucher has no entries!", {}
    total = sum((leg["amount"] for leg in legs), Decimal(0))
    if total != 0:
        debit = -sum((leg["amount"] for leg in legs if leg["amount"] < 0), Decimal(0))
        credit = sum((leg["amount"] for leg in legs if leg["amount"] > 0), Decimal(0))
        return f"Voucher totals do not match! Dr: {debit} Dr  Cr: {credit} Cr  Diff: {abs(total)}", {}
    stored = {
        "voucher_type": kind,
        "date": parsed.isoformat(),
        "voucher_number": _text(voucher, "VOUCHERNUMBER"),
        "reference": _text(voucher, "REFERENCE"),
        "party_ledger": _text(voucher, "PARTYLEDGERNAME"),
        "narration": _text(voucher, "NARRATION"),
        "legs": legs,
    }
    return None, stored


def create_app() -> FastAPI:
    app = FastAPI(title="Tally Prime sandbox (XML over HTTP)")
    kit = SandboxKit(effects=EFFECTS)
    state = TallyState()
    kit.on_reset(state.reset)
    kit.install(app)

    def do_budgets(root: Any, company: Company) -> Response:
        # Budget masters (connectors/tally/budgets.py): every line's ledger must exist; a name the
        # company holds is replaced (ALTERED).
        counts: dict[str, int] = {}
        errors: list[str] = []
        for budget in root.iterfind("BODY/IMPORTDATA/REQUESTDATA/TALLYMESSAGE/BUDGET"):
            name = budget.get("NAME") or _text(budget, "NAME")
            lines = []
            for line in budget.findall("BUDGETDETAILS.LIST"):
                ledger, amount = _text(line, "NAME"), _amount(_text(line, "AMOUNT"))
                if ledger not in company.ledgers:
                    errors.append(f"Ledger '{ledger}' does not exist!")
                    break
                if amount is None:
                    errors.append(f"Invalid amount for ledger '{ledger}'")
                    break
                lines.append({"ledger": ledger, "type": _text(line, "BUDGETTYPE"), "amount": str(amount)})
            else:
                effect = "budget_altered" if name in company.budgets else "budget_created"
                company.budgets[name] = {
                    "name": name,
                    "parent": _text(budget, "PARENT"),
                    "from": _text(budget, "STARTINGFROM"),
                    "to": _text(budget, "ENDINGAT"),
                    "lines": lines,
                }
                counter = "ALTERED" if effect == "budget_altered" else "CREATED"
                counts[counter] = counts.get(counter, 0) + 1
                kit.record_effect(effect)
                continue
            counts["ERRORS"] = counts.get("ERRORS", 0) + 1
        return _answer(counts, errors)

    def do_import(root: Any, company: Company) -> Response:
        report = _text(root, "BODY/IMPORTDATA/REQUESTDESC/REPORTNAME")
        if report == "All Masters":
            return do_budgets(root, company)
        if report != "Vouchers":
            return _error(f"Unknown report '{report[:40]}' for import")
        counts: dict[str, int] = {}
        errors: list[str] = []
        last = 0
        for voucher in root.iterfind("BODY/IMPORTDATA/REQUESTDATA/TALLYMESSAGE/VOUCHER"):
            problem, stored = _voucher_problem(company, voucher)
            if problem is not None:
                errors.append(problem)
                counts["ERRORS"] = counts.get("ERRORS", 0) + 1
                continue
            key = voucher.get("REMOTEID") or _text(voucher, "GUID")
            existing = company.vouchers.get(key) if key else None
            if existing is not None:
                company.vouchers[key] = {**stored, "id": existing["id"], "remote_id": key}
                counts["ALTERED"] = counts.get("ALTERED", 0) + 1
                kit.record_effect("voucher_altered")
                last = existing["id"]
                continue
            last = company.next_id
            company.next_id += 1
            company.vouchers[key or f"local-{last}"] = {**stored, "id": last, "remote_id": key}
            counts["CREATED"] = counts.get("CREATED", 0) + 1
            kit.record_effect("voucher_created")
        return _answer(counts, errors, last)

    def do_export(root: Any, company: Company) -> Response:
        report = _text(root, "BODY/EXPORTDATA/REQUESTDESC/REPORTNAME")
        if report != "List of Accounts":
            return _error(f"Unknown report '{report[:40]}' for export")
        out = etree.Element("ENVELOPE")
        header = etree.SubElement(out, "HEADER")
        etree.SubElement(header, "TALLYREQUEST").text = "Import Data"
        importing = etree.SubElement(etree.SubElement(out, "BODY"), "IMPORTDATA")
        desc = etree.SubElement(importing, "REQUESTDESC")
        etree.SubElement(desc, "REPORTNAME").text = "All Masters"
        data = etree.SubElement(importing, "REQUESTDATA")
        for ledger in company.ledgers.values():
            message = etree.SubElement(data, "TALLYMESSAGE")
            node = etree.SubElement(message, "LEDGER", NAME=ledger["name"], RESERVEDNAME="")
            etree.SubElement(node, "PARENT").text = ledger["parent"]
            etree.SubElement(node, "OPENINGBALANCE").text = str(ledger["opening_balance"])
            closing = ledger["opening_balance"] + sum(
                (
                    leg["amount"]
                    for v in company.vouchers.values()
                    for leg in v["legs"]
                    if leg["ledger"] == ledger["name"]
                ),
                Decimal(0),
            )
            etree.SubElement(node, "CLOSINGBALANCE").text = str(closing)
        return Response(etree.tostring(out, encoding="UTF-8"), media_type="text/xml")

    async def held_if_busy() -> None:
        load = state.load
        if load.slow_s <= 0 or state.in_flight <= load.busy_above:
            return
        if load.slow_requests is not None:
            if load.slow_requests == 0:
                return
            load.slow_requests -= 1
        await asyncio.sleep(load.slow_s)

    @app.post("/")
    async def tally(request: Request) -> Response:
        state.in_flight += 1
        try:
            body = await request.body()
            await held_if_busy()
            try:
                root = etree.fromstring(body, parser=_parser())
            except etree.XMLSyntaxError:
                return _error("Could not parse the request: not well-formed XML")
            if root is None or root.tag != "ENVELOPE":
                return _error("Could not parse the request: no ENVELOPE")
            request_kind = _text(root, "HEADER/TALLYREQUEST")
            name = _text(root, "BODY/IMPORTDATA/REQUESTDESC/STATICVARIABLES/SVCURRENTCOMPANY") or _text(
                root, "BODY/EXPORTDATA/REQUESTDESC/STATICVARIABLES/SVCURRENTCOMPANY"
            )
            company = state.companies.get(name)
            if company is None:
                return _error(f"Could not set 'SVCurrentCompany' to '{name[:200]}'")
            if request_kind == "Import Data":
                return do_import(root, company)
            if request_kind == "Export Data":
                return do_export(root, company)
            return _error("Unknown Request, cannot be processed")
        finally:
            state.in_flight -= 1

    @app.put("/_sandbox/tally/companies/{name}/ledgers")
    def load_company(name: str, body: LedgersIn) -> dict[str, Any]:
        company = state.companies.setdefault(name, Company())
        for ledger in body.ledgers:
            company.ledgers[ledger.name] = ledger.model_dump()
        return {"company": name, "ledgers": sorted(company.ledgers)}

    @app.get("/_sandbox/tally/companies/{name}/vouchers")
    def vouchers(name: str) -> dict[str, Any]:
        company = state.companies.get(name) or Company()
        items = [
            {**v, "legs": [{**leg, "amount": str(leg["amount"])} for leg in v["legs"]]}
            for v in sorted(company.vouchers.values(), key=lambda v: v["id"])
        ]
        return {"items": items}

    @app.get("/_sandbox/tally/companies/{name}/budgets")
    def budgets(name: str) -> dict[str, Any]:
        company = state.companies.get(name) or Company()
        return {"items": [company.budgets[key] for key in sorted(company.budgets)]}

    @app.post("/_sandbox/tally/load")
    def set_load(load: Load) -> Load:
        state.load = load
        return load

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local Tally Prime sandbox (XML over HTTP)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9162)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()


__all__ = ["DEMO_COMPANY", "DEMO_LEDGER_MAP", "create_app"]

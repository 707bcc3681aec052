"""A local KRA eTIMS: the OSCU and VSCU contract of :mod:`connectors.etims.client`, with KRA's rules.

What it enforces (kenya-etims.md):

* initialisation (``/etims-api/selectInitOsdcInfo``, VSCU ``/initializer/selectInitInfo``) hands out a
  CMC key once per (tin, branch, serial); again -> 902. ``known_devices`` restricts which devices KRA
  "approved" (others -> 901); by default every well-formed one is approved.
* every other call needs the headers ``tin``, ``bhfId``, ``cmcKey`` (missing -> 900, a key that is not
  the device's -> 901); the key's device type must match the path (-> 903).
* ``selectCodeList``/``selectItemClsList`` answer what changed since ``lastReqDt`` (001 when nothing),
  class 04 with the rates A 0, B 16, C 0, D 0, E 8 in ``userDfnCd1``.
* ``saveItem`` checks the item code's shape against its type and units, the tax type and the class.
* ``saveTrnsSalesOsdc`` (VSCU ``/trnsSales/saveSales``): per (tin, branch) the ``invcNo`` must be the
  next one or later; a repeat of an accepted number -> 994 (VSCU: 899, as reported). A number past
  the next leaves the ones between it unused for good (an operator's void does that: KRA publishes no
  gap rule, and a void could not work if gaps were refused); they are counted as the effect
  ``invc_no_skipped`` and listed per branch, so a test can tell a void from a numbering bug, and a
  skipped number sent later is refused with 921 (sales are received in sequence). Items must be
  registered; totals must add up; a credit note needs an existing original ``orgInvcNo`` and a
  refund reason. Each accepted sale gets its own receipt
  counters, internal data and signature (an HMAC of the sale under a key of this sandbox).
* the sales look-up :meth:`EtimsClient.find_sale` uses (``/etims-api/selectInvoiceDetails``, VSCU
  ``/trnsSales/selectSales``): the receipt of an accepted invcNo, 001 otherwise.

Effects counted in ``/_sandbox/stats``: ``devices_initialized``, ``items_saved``, ``sales_signed``.
Faults come from :mod:`connectors.sandbox_kit`; ``POST /_sandbox/etims/profile`` sets eTIMS's usual
ones by name: ``congestion`` (slow answers), ``outage`` (503 with Retry-After),
``timeout_after_accept`` (the sale is recorded, then the answer is held past the client's timeout),
``none``. ``GET /_sandbox/etims/sales`` lists what was accepted per branch (for tests) and ``POST
/_sandbox/etims/devices/reset`` is KRA resetting a device after a lost key (902 without a stored key).

Run it: ``python -m connectors.etims.sandbox --port 9103``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from connectors.etims import errors as codes
from connectors.etims.client import PATHS
from connectors.etims.mapping import NAIROBI, TAX_TYPES, kra_datetime, parse_item_code
from connectors.etims.settings import BRANCH_ID, KRA_PIN
from connectors.sandbox_kit import Faults, SandboxKit

EFFECTS = ("devices_initialized", "items_saved", "sales_signed", "invc_no_skipped")
OSCU, VSCU = PATHS["oscu"], PATHS["vscu"]

CODES_UPDATED_AT = datetime(2024, 1, 1, 8, 0, tzinfo=NAIROBI)
"""When this sandbox's code lists and item classes last "changed": a lastReqDt at or after it gets 001."""

CODE_CLASSES: list[dict[str, Any]] = [
    {
        "cdCls": "04",
        "cdClsNm": "Taxation Type",
        "dtlList": [
            {"cd": "A", "cdNm": "A-Exempt", "userDfnCd1": "0", "srtOrd": 1, "useYn": "Y"},
            {"cd": "B", "cdNm": "B-16.00%", "userDfnCd1": "16", "srtOrd": 2, "useYn": "Y"},
            {"cd": "C", "cdNm": "C-0%", "userDfnCd1": "0", "srtOrd": 3, "useYn": "Y"},
            {"cd": "D", "cdNm": "D-Non-VAT", "userDfnCd1": "0", "srtOrd": 4, "useYn": "Y"},
            {"cd": "E", "cdNm": "E-8%", "userDfnCd1": "8", "srtOrd": 5, "useYn": "Y"},
        ],
    },
    {
        "cdCls": "07",
        "cdClsNm": "Payment Type",
        "dtlList": [
            {"cd": cd, "cdNm": name, "userDfnCd1": None, "srtOrd": i, "useYn": "Y"}
            for i, (cd, name) in enumerate(
                [
                    ("01", "CASH"),
                    ("02", "CREDIT"),
                    ("03", "CASH/CREDIT"),
                    ("04", "BANK CHECK"),
                    ("05", "DEBIT&CREDIT CARD"),
                    ("06", "MOBILE MONEY"),
                    ("07", "OTHER"),
                ],
                start=1,
            )
        ],
    },
    {
        "cdCls": "10",
        "cdClsNm": "Quantity Unit",
        "dtlList": [
            {"cd": cd, "cdNm": name, "userDfnCd1": None, "srtOrd": i, "useYn": "Y"}
            for i, (cd, name) in enumerate(
                [("U", "Pieces/item [Number]"), ("KG", "Kilo-Gramme"), ("LTR", "Litre"), ("BX", "Box")],
                start=1,
            )
        ],
    },
    {
        "cdCls": "17",
        "cdClsNm": "Packing Unit",
        "dtlList": [
            {"cd": cd, "cdNm": name, "userDfnCd1": None, "srtOrd": i, "useYn": "Y"}
            for i, (cd, name) in enumerate(
                [("NT", "NET"), ("BG", "Bag"), ("BX", "Box"), ("CT", "Carton")], start=1
            )
        ],
    },
    {
        "cdCls": "32",
        "cdClsNm": "Refund Reason",
        "dtlList": [
            {"cd": cd, "cdNm": name, "userDfnCd1": None, "srtOrd": i, "useYn": "Y"}
            for i, (cd, name) in enumerate(
                [
                    ("01", "Missing Quantity"),
                    ("02", "Missing Item"),
                    ("03", "Damaged"),
                    ("04", "Wasted"),
                    ("05", "Raw Material Shortage"),
                    ("06", "Refund"),
                    ("07", "Wrong Customer PIN"),
                    ("08", "Wrong Customer name"),
                    ("09", "Wrong Amount/price"),
                    ("10", "Wrong Quantity"),
                    ("11", "Wrong Item(s)"),
                    ("12", "Wrong tax type"),
                    ("13", "Other reason"),
                ],
                start=1,
            )
        ],
    },
]
UNITS_QTY = {d["cd"] for d in CODE_CLASSES[2]["dtlList"]}
UNITS_PKG = {d["cd"] for d in CODE_CLASSES[3]["dtlList"]}
REFUND_REASONS = {d["cd"] for d in CODE_CLASSES[4]["dtlList"]}
PAYMENT_TYPES = {d["cd"] for d in CODE_CLASSES[1]["dtlList"]}

ITEM_CLASSES: list[dict[str, Any]] = [
    {"itemClsCd": cd, "itemClsNm": name, "itemClsLvl": 4, "taxTyCd": tax, "mjrTgYn": "N", "useYn": "Y"}
    for cd, name, tax in (
        ("5020230100", "Bottled water", "B"),
        ("5059690800", "Packaged foodstuff", "B"),
        ("5010150000", "Fresh vegetables", "A"),
        ("8111150000", "Software consulting services", "B"),
        ("4322150000", "Computer hardware", "B"),
        ("5111170000", "Medicines", "E"),
        ("9901200000", "Goods not classified", "D"),
    )
]
KNOWN_ITEM_CLASSES = {c["itemClsCd"] for c in ITEM_CLASSES}

DeviceType = Literal["oscu", "vscu"]


@dataclass
class Device:
    tin: str
    bhf_id: str
    serial: str
    device_type: DeviceType
    cmc_key: str
    dvc_id: str
    sdc_id: str
    mrc_no: str


@dataclass
class Sale:
    invc_no: int
    receipt_type: str
    org_invc_no: int
    trd_invc_no: str | None
    total: str
    receipt: dict[str, Any]


@dataclass
class Branch:
    sales: dict[int, Sale] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    receipt_counters: dict[str, int] = field(default_factory=dict)
    total_receipts: int = 0

    @property
    def next_invc_no(self) -> int:
        return len(self.sales) + len(self.skipped) + 1


@dataclass
class _State:
    devices: dict[tuple[str, str, str], Device] = field(default_factory=dict)
    items: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    branches: dict[tuple[str, str], Branch] = field(default_factory=dict)
    serial_counter: int = 0

    def clear(self) -> None:
        self.devices.clear()
        self.items.clear()
        self.branches.clear()
        self.serial_counter = 0

    def device_by_key(self, tin: str, bhf_id: str, key: str) -> Device | None:
        for device in self.devices.values():
            if device.tin == tin and device.bhf_id == bhf_id and hmac.compare_digest(device.cmc_key, key):
                return device
        return None


@dataclass(frozen=True)
class PreinstalledDevice:
    """A device initialised before the sandbox started (tests that need a CMC key without an init)."""

    tin: str
    bhf_id: str
    serial: str
    device_type: DeviceType
    cmc_key: str


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: Literal["none", "congestion", "outage", "timeout_after_accept"]
    latency_ms: int = 1500
    """congestion: how slow each answer is."""
    hang_s: float = 60.0
    """timeout_after_accept: how long the accepted sale's answer is held (past the client's timeout)."""
    rate: float = 1.0
    """timeout_after_accept: the share of sales whose answer is held."""
    seed: int = 0


class DeviceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tin: str
    bhf_id: str
    device_serial: str


SALE_PATHS = (OSCU.save_sale, VSCU.save_sale)


def profile_faults(profile: Profile) -> Faults:
    """The kit's fault settings for an eTIMS behaviour, by name."""
    if profile.profile == "congestion":
        return Faults(latency_ms=profile.latency_ms, seed=profile.seed)
    if profile.profile == "outage":
        return Faults(outage=True, retry_after_s=5, seed=profile.seed)
    if profile.profile == "timeout_after_accept":
        return Faults(
            after_effect_failure_rate=profile.rate,
            after_effect="hang",
            hang_s=profile.hang_s,
            paths=list(SALE_PATHS),
            seed=profile.seed,
        )
    return Faults()


def _answer(code: str, message: str, now: datetime, data: Any = None) -> JSONResponse:
    return JSONResponse({"resultCd": code, "resultMsg": message, "resultDt": kra_datetime(now), "data": data})


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _kra_dt(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    except ValueError:
        return None


class Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def create_app(
    *,
    known_devices: Iterable[tuple[str, str, str]] | None = None,
    preinstalled: Iterable[PreinstalledDevice] = (),
    signing_key: bytes | None = None,
) -> FastAPI:
    """The sandbox app. ``known_devices``: the (tin, bhf_id, serial) KRA approved (None: any
    well-formed one); ``preinstalled``: devices already initialised (they survive ``/_sandbox/reset``)."""
    approved = None if known_devices is None else {tuple(d) for d in known_devices}
    seeded = tuple(preinstalled)
    key = signing_key or secrets.token_bytes(32)
    kit = SandboxKit(effects=EFFECTS)
    state = _State()

    def seed() -> None:
        state.clear()
        for pre in seeded:
            state.serial_counter += 1
            state.devices[(pre.tin, pre.bhf_id, pre.serial)] = _new_device(
                pre.tin, pre.bhf_id, pre.serial, pre.device_type, state.serial_counter, pre.cmc_key
            )

    seed()
    kit.on_reset(seed)
    app = FastAPI(title="KRA eTIMS sandbox (OSCU + VSCU)", docs_url=None, redoc_url=None)
    kit.install(app)

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            raise Refusal("911", "There is no request full text")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise Refusal(codes.PARAMETER_ERROR, "The request is not valid JSON") from exc
        if not isinstance(body, dict):
            raise Refusal(codes.PARAMETER_ERROR, "The request must be a JSON object")
        return body

    def device_of(request: Request, device_type: DeviceType) -> Device:
        tin = request.headers.get("tin", "")
        bhf_id = request.headers.get("bhfid", "")
        cmc_key = request.headers.get("cmckey", "")
        if not tin or not bhf_id or not cmc_key:
            raise Refusal(codes.NO_HEADER, "There is no header information (tin, bhfId, cmcKey)")
        device = state.device_by_key(tin, bhf_id, cmc_key)
        if device is None:
            raise Refusal(codes.INVALID_DEVICE, "It is not valid device")
        if device.device_type != device_type:
            raise Refusal(
                codes.ONLY_OSCU_VERIFIABLE, f"This device is registered as {device.device_type.upper()}"
            )
        return device

    def initialise(body: Mapping[str, Any], device_type: DeviceType) -> JSONResponse:
        tin = str(body.get("tin") or "")
        bhf_id = str(body.get("bhfId") or "")
        serial = str(body.get("dvcSrlNo") or "")
        if not KRA_PIN.match(tin) or not BRANCH_ID.match(bhf_id) or not serial:
            raise Refusal(codes.PARAMETER_ERROR, "tin (KRA PIN), bhfId (2 digits) and dvcSrlNo are required")
        if approved is not None and (tin, bhf_id, serial) not in approved:
            raise Refusal(codes.INVALID_DEVICE, "It is not valid device")
        if (tin, bhf_id, serial) in state.devices:
            raise Refusal(codes.DEVICE_ALREADY_INSTALLED, "This device is installed")
        state.serial_counter += 1
        device = _new_device(
            tin, bhf_id, serial, device_type, state.serial_counter, secrets.token_hex(20).upper()
        )
        state.devices[(tin, bhf_id, serial)] = device
        kit.record_effect("devices_initialized")
        branch = state.branches.get((tin, bhf_id))
        info: dict[str, Any] = {
            "tin": tin,
            "taxprNm": f"Taxpayer {tin}",
            "bsnsActv": None,
            "bhfId": bhf_id,
            "bhfNm": "Headquarter" if bhf_id == "00" else f"Branch {bhf_id}",
            "bhfOpenDt": "20240101",
            "prvncNm": "NAIROBI",
            "dstrtNm": "WESTLANDS",
            "sctrNm": "PARKLANDS",
            "locDesc": None,
            "hqYn": "Y" if bhf_id == "00" else "N",
            "mgrNm": None,
            "mgrTelNo": None,
            "mgrEmail": None,
            "dvcId": device.dvc_id,
            "sdcId": device.sdc_id,
            "mrcNo": device.mrc_no,
            "cmcKey": device.cmc_key,
            "lastSaleInvcNo": (branch.next_invc_no - 1) if branch else 0,
        }
        if device_type == "vscu":
            info["intrlKey"] = secrets.token_hex(16).upper()
            info["signKey"] = secrets.token_hex(16).upper()
        return _answer(codes.SUCCESS, "It is succeeded", kit.clock.now(), {"info": info})

    def changed_since(body: Mapping[str, Any]) -> bool:
        since = _kra_dt(body.get("lastReqDt"))
        if since is None:
            raise Refusal(codes.PARAMETER_ERROR, "lastReqDt must be YYYYMMDDhhmmss")
        return since < CODES_UPDATED_AT

    def save_item(device: Device, body: Mapping[str, Any]) -> JSONResponse:
        code = str(body.get("itemCd") or "")
        try:
            parts = parse_item_code(code)
        except ValueError as exc:
            raise Refusal(codes.PARAMETER_ERROR, f"Invalid item code: {exc}") from exc
        problems = []
        if str(body.get("itemTyCd")) != parts.item_type:
            problems.append("itemTyCd does not match the item code")
        if body.get("pkgUnitCd") != parts.pkg_unit or parts.pkg_unit not in UNITS_PKG:
            problems.append("Invalid Packaging Unit Code")
        if body.get("qtyUnitCd") != parts.qty_unit or parts.qty_unit not in UNITS_QTY:
            problems.append("Invalid Quantity Unit Code")
        if body.get("taxTyCd") not in TAX_TYPES:
            problems.append("Invalid Tax Type Code")
        if body.get("itemClsCd") not in KNOWN_ITEM_CLASSES:
            problems.append("Invalid Item Classification Code")
        if not body.get("itemNm"):
            problems.append("itemNm is required")
        if problems:
            raise Refusal(codes.PARAMETER_ERROR, "; ".join(problems))
        state.items[(device.tin, code)] = dict(body)
        kit.record_effect("items_saved")
        return _answer(codes.SUCCESS, "It is succeeded", kit.clock.now())

    def sign(device: Device, body: Mapping[str, Any], branch: Branch, receipt_type: str) -> dict[str, Any]:
        branch.receipt_counters[receipt_type] = branch.receipt_counters.get(receipt_type, 0) + 1
        branch.total_receipts += 1
        message = f"{device.tin}|{device.bhf_id}|{body['invcNo']}|{receipt_type}|{body.get('totAmt')}"
        digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
        text = base64.b32encode(digest).decode().rstrip("=")
        return {
            "receipt_no": branch.receipt_counters[receipt_type],
            "total_receipt_no": branch.total_receipts,
            "internal_data": text[:26],
            "receipt_signature": text[26:42],
            "sdc_datetime": kra_datetime(kit.clock.now()),
        }

    def check_sale(device: Device, body: Mapping[str, Any], branch: Branch) -> tuple[int, str]:
        invc_no = body.get("invcNo")
        if not isinstance(invc_no, int) or isinstance(invc_no, bool) or invc_no < 1:
            raise Refusal(codes.PARAMETER_ERROR, "invcNo must be a positive integer")
        receipt_type = body.get("rcptTyCd")
        if receipt_type not in ("S", "R"):
            raise Refusal(codes.PARAMETER_ERROR, "rcptTyCd must be S (sale) or R (credit note)")
        if invc_no in branch.sales:
            duplicate = codes.DUPLICATE if device.device_type == "oscu" else codes.VSCU_CLIENT_ERROR
            raise Refusal(duplicate, f"invcNo {invc_no} was already received (overlapped data)")
        if invc_no < branch.next_invc_no:
            raise Refusal(
                "921",
                f"Sales data declared cannot be received: invcNo {invc_no} was passed over "
                f"(the next expected is {branch.next_invc_no})",
            )
        if body.get("pmtTyCd") not in PAYMENT_TYPES:
            raise Refusal(codes.PARAMETER_ERROR, "Invalid payment type code (pmtTyCd)")
        if _kra_dt(body.get("cfmDt")) is None or len(str(body.get("salesDt") or "")) != 8:
            raise Refusal(codes.PARAMETER_ERROR, "cfmDt (YYYYMMDDhhmmss) and salesDt (YYYYMMDD) are required")
        if receipt_type == "R":
            original = branch.sales.get(int(body.get("orgInvcNo") or 0))
            if original is None or original.receipt_type != "S":
                raise Refusal(codes.PARAMETER_ERROR, "orgInvcNo must name an existing sale of this branch")
            if body.get("rfdRsnCd") not in REFUND_REASONS:
                raise Refusal(codes.PARAMETER_ERROR, "rfdRsnCd (refund reason, code class 32) is required")
        items = body.get("itemList")
        if not isinstance(items, list) or not items or len(items) != body.get("totItemCnt"):
            raise Refusal(codes.PARAMETER_ERROR, "itemList must hold totItemCnt items")
        taxable = Decimal("0")
        for item in items:
            code = str(item.get("itemCd") or "") if isinstance(item, dict) else ""
            if (device.tin, code) not in state.items:
                raise Refusal(codes.PARAMETER_ERROR, f"Item {code or '?'} is not registered (saveItem first)")
            value = _decimal(item.get("taxblAmt"))
            if value is None:
                raise Refusal(codes.PARAMETER_ERROR, f"Item {code}: taxblAmt is not a number")
            taxable += value
        totals = [_decimal(body.get(k)) for k in ("totTaxblAmt", "totTaxAmt", "totAmt")]
        if any(t is None for t in totals):
            raise Refusal(codes.PARAMETER_ERROR, "totTaxblAmt, totTaxAmt and totAmt are required numbers")
        tot_taxable, tot_tax, total = (t or Decimal("0") for t in totals)
        if abs(tot_taxable - taxable) > Decimal("0.01") or abs(tot_taxable + tot_tax - total) > Decimal(
            "0.01"
        ):
            raise Refusal(
                codes.PARAMETER_ERROR, "The totals do not add up (totTaxblAmt + totTaxAmt = totAmt)"
            )
        return invc_no, receipt_type

    def save_sale(device: Device, body: Mapping[str, Any]) -> JSONResponse:
        branch = state.branches.setdefault((device.tin, device.bhf_id), Branch())
        invc_no, receipt_type = check_sale(device, body, branch)
        passed_over = range(branch.next_invc_no, invc_no)
        branch.skipped.update(passed_over)
        for _ in passed_over:
            kit.record_effect("invc_no_skipped")
        signed = sign(device, body, branch, receipt_type)
        branch.sales[invc_no] = Sale(
            invc_no=invc_no,
            receipt_type=receipt_type,
            org_invc_no=int(body.get("orgInvcNo") or 0),
            trd_invc_no=body.get("trdInvcNo"),
            total=str(body.get("totAmt")),
            receipt=signed,
        )
        kit.record_effect("sales_signed")
        return _answer(codes.SUCCESS, "It is succeeded", kit.clock.now(), _receipt_data(device, signed))

    def find_sale(device: Device, body: Mapping[str, Any]) -> JSONResponse:
        branch = state.branches.get((device.tin, device.bhf_id))
        try:
            invc_no = int(body.get("invcNo"))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise Refusal(codes.PARAMETER_ERROR, "invcNo must be an integer") from exc
        sale = branch.sales.get(invc_no) if branch else None
        if sale is None:
            return _answer(codes.NO_SEARCH_RESULT, "There is no search result", kit.clock.now())
        data = {"invcNo": invc_no, "rcptTyCd": sale.receipt_type, **_receipt_data(device, sale.receipt)}
        return _answer(codes.SUCCESS, "It is succeeded", kit.clock.now(), data)

    def route(path: str, device_type: DeviceType, action: str) -> None:
        async def handle(request: Request) -> JSONResponse:
            try:
                if action == "init":
                    return initialise(await body_of(request), device_type)
                device = device_of(request, device_type)
                body = await body_of(request)
                if action == "codes":
                    if not changed_since(body):
                        return _answer(codes.NO_SEARCH_RESULT, "There is no search result", kit.clock.now())
                    return _answer(
                        codes.SUCCESS, "It is succeeded", kit.clock.now(), {"clsList": CODE_CLASSES}
                    )
                if action == "item_classes":
                    if not changed_since(body):
                        return _answer(codes.NO_SEARCH_RESULT, "There is no search result", kit.clock.now())
                    data = {"itemClsList": ITEM_CLASSES}
                    return _answer(codes.SUCCESS, "It is succeeded", kit.clock.now(), data)
                if action == "item":
                    return save_item(device, body)
                if action == "sale":
                    return save_sale(device, body)
                return find_sale(device, body)
            except Refusal as refusal:
                return _answer(refusal.code, refusal.message, kit.clock.now())

        app.add_api_route(path, handle, methods=["POST"], name=f"{device_type}:{action}")

    for device_type, paths in (("oscu", OSCU), ("vscu", VSCU)):
        dtype: DeviceType = "oscu" if device_type == "oscu" else "vscu"
        route(paths.init, dtype, "init")
        route(paths.code_list, dtype, "codes")
        route(paths.item_classes, dtype, "item_classes")
        route(paths.save_item, dtype, "item")
        route(paths.save_sale, dtype, "sale")
        route(paths.find_sale, dtype, "find")

    @app.post("/_sandbox/etims/profile")
    def set_profile(profile: Profile) -> Faults:
        kit.set_faults(profile_faults(profile))
        return kit.faults

    @app.get("/_sandbox/etims/sales")
    def list_sales() -> dict[str, Any]:
        return {
            "branches": [
                {
                    "tin": tin,
                    "bhf_id": bhf_id,
                    "sales": [
                        {
                            "invc_no": s.invc_no,
                            "rcpt_ty_cd": s.receipt_type,
                            "org_invc_no": s.org_invc_no,
                            "trd_invc_no": s.trd_invc_no,
                            "tot_amt": s.total,
                            "receipt_no": s.receipt["receipt_no"],
                        }
                        for s in sorted(branch.sales.values(), key=lambda s: s.invc_no)
                    ],
                    "skipped": sorted(branch.skipped),
                }
                for (tin, bhf_id), branch in sorted(state.branches.items())
            ]
        }

    @app.post("/_sandbox/etims/devices/reset")
    def reset_device(device: DeviceRef) -> dict[str, bool]:
        removed = state.devices.pop((device.tin, device.bhf_id, device.device_serial), None)
        return {"reset": removed is not None}

    return app


def _new_device(tin: str, bhf_id: str, serial: str, device_type: DeviceType, n: int, cmc_key: str) -> Device:
    prefix = "KRACU" if device_type == "oscu" else "KRAVSCU"
    return Device(
        tin=tin,
        bhf_id=bhf_id,
        serial=serial,
        device_type=device_type,
        cmc_key=cmc_key,
        dvc_id=f"{n:016d}",
        sdc_id=f"{prefix}{n:07d}",
        mrc_no=f"WIS{n:08d}",
    )


def _receipt_data(device: Device, signed: Mapping[str, Any]) -> dict[str, Any]:
    if device.device_type == "oscu":
        # OSCU sends its counters as strings and no sdcId/mrcNo (they came with the initialisation).
        return {
            "curRcptNo": str(signed["receipt_no"]),
            "totRcptNo": str(signed["total_receipt_no"]),
            "intrlData": signed["internal_data"],
            "rcptSign": signed["receipt_signature"],
            "sdcDateTime": signed["sdc_datetime"],
        }
    return {
        "rcptNo": signed["receipt_no"],
        "totRcptNo": signed["total_receipt_no"],
        "intrlData": signed["internal_data"],
        "rcptSign": signed["receipt_signature"],
        "vsdcRcptPbctDate": signed["sdc_datetime"],
        "sdcId": device.sdc_id,
        "mrcNo": device.mrc_no,
    }


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Local KRA eTIMS sandbox (OSCU and VSCU)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9103)
    parser.add_argument(
        "--device",
        action="append",
        default=None,
        metavar="TIN:BHF:SERIAL",
        help="a device KRA approved (repeatable); without any, every well-formed device may initialise",
    )
    args = parser.parse_args(argv)
    known = None
    if args.device:
        known = [tuple(d.split(":", 2)) for d in args.device]
    uvicorn.run(create_app(known_devices=known), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""An async client for KRA eTIMS, OSCU and VSCU, one instance per device (tin + branch) and host.

What it speaks (kenya-etims.md): JSON over HTTP POST. OSCU is KRA-hosted at
``<host>/etims-api/<endpoint>`` (``selectInitOsdcInfo``, ``selectCodeList``, ``selectItemClsList``,
``saveItem``, ``saveTrnsSalesOsdc``); VSCU is KRA's signing service (a JAR) on the integrator's side
with the same field names under other paths (``/initializer/selectInitInfo``, ``/code/selectCodes``,
``/itemClass/selectItemsClass``, ``/items/saveItems``, ``/trnsSales/saveSales``). Every call but
the initialisation carries the headers ``tin``, ``bhfId`` and ``cmcKey``; every answer is the envelope
``{resultCd, resultMsg, resultDt, data}``, usually with HTTP 200 whatever the result. The
initialisation returns the device's CMC key exactly once (902 afterwards): the caller stores it.

Timeouts: 45 s by default, as Odoo's OSCU module uses ("eTIMS can often have congestion").
Redirects are never followed (they would carry the ``cmcKey`` header elsewhere). The CMC key never
appears in ``repr``, an error's message or details, or a log line (``without_secrets``).

Unconfirmed (no primary source): the VSCU paths and its answers' exact shape (taken from integrators'
code and RRA's VSDC, the same platform); whether KRA ever answers with HTTP 4xx/5xx and an envelope
(both are handled); the sales look-up used by :meth:`EtimsClient.find_sale` (see there).

Every failure leaves as a :class:`connectors.errors.ConnectorError`; httpx's exceptions never escape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import httpx

from connectors.errors import (
    ConnectorError,
    NeedsAttentionError,
    RetryableError,
    retry_after_seconds,
    without_secrets,
)
from connectors.etims import errors as etims_errors
from connectors.etims.errors import SaleLookupUnavailable
from connectors.etims.mapping import SaleReceipt, parse_receipt

log = logging.getLogger(__name__)

PROVIDER = "etims"
DeviceType = Literal["oscu", "vscu"]
DEVICE_TYPES: tuple[str, ...] = ("oscu", "vscu")
DEFAULT_TIMEOUT = 45.0
"""Odoo l10n_ke_edi_oscu waits 45 s: KRA's OSCU is often congested, and giving up early on a sale
that KRA then accepts only turns into a 994 on the resend."""
CONNECT_TIMEOUT = 10.0
OSCU_PREFIX = "/etims-api"


@dataclass(frozen=True)
class Paths:
    init: str
    code_list: str
    item_classes: str
    save_item: str
    save_sale: str
    find_sale: str


PATHS: dict[str, Paths] = {
    "oscu": Paths(
        init=f"{OSCU_PREFIX}/selectInitOsdcInfo",
        code_list=f"{OSCU_PREFIX}/selectCodeList",
        item_classes=f"{OSCU_PREFIX}/selectItemClsList",
        save_item=f"{OSCU_PREFIX}/saveItem",
        save_sale=f"{OSCU_PREFIX}/saveTrnsSalesOsdc",
        # Unconfirmed: named "LOOK UP INVOICE DETAILS" on KRA's OSCU go-live test-case list as
        # integrators report it (also spelled selectInvoiceDtl); not in the OSCU specification.
        find_sale=f"{OSCU_PREFIX}/selectInvoiceDetails",
    ),
    "vscu": Paths(
        init="/initializer/selectInitInfo",
        code_list="/code/selectCodes",
        item_classes="/itemClass/selectItemsClass",
        save_item="/items/saveItems",
        save_sale="/trnsSales/saveSales",
        # Unconfirmed: the VSCU JAR keeps its own sales journal; this path follows its naming.
        find_sale="/trnsSales/selectSales",
    ),
}


@dataclass(frozen=True)
class DeviceInfo:
    """What the initialisation returns (``data.info``); the keys are secrets, kept out of ``repr``."""

    tin: str
    taxpayer_name: str | None
    bhf_id: str
    branch_name: str | None
    dvc_id: str | None
    sdc_id: str | None
    mrc_no: str | None
    last_invc_no: int | None
    """The last sale invcNo KRA/VSCU knows for the device, when it says (lastSaleInvcNo / lastInvcNo)."""
    cmc_key: str | None = field(repr=False)
    keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    """VSCU's further keys (intrlKey, signKey) when it returns them; store them like the CMC key."""


@dataclass(frozen=True)
class Code:
    code: str
    name: str
    user_defined_1: str | None
    """Class 04 (tax types) carries the rate here, e.g. "16" for B."""
    sort_order: int | None
    in_use: bool


@dataclass(frozen=True)
class CodeClass:
    code_class: str
    name: str
    codes: tuple[Code, ...]


@dataclass(frozen=True)
class ItemClass:
    code: str
    name: str
    level: int | None
    tax_type: str | None
    major_target: bool
    in_use: bool


class EtimsClient:
    """``async with EtimsClient(url, device_type="oscu", tin=..., bhf_id=..., cmc_key=...) as kra:``."""

    def __init__(
        self,
        base_url: str,
        *,
        device_type: str,
        tin: str,
        bhf_id: str,
        cmc_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        if device_type not in PATHS:
            raise ValueError(f"device_type must be one of {', '.join(DEVICE_TYPES)}, not {device_type!r}")
        self.device_type = device_type
        self.tin = tin
        self.bhf_id = bhf_id
        self._cmc_key = cmc_key
        self._paths = PATHS[device_type]
        root = base_url.rstrip("/")
        # A base URL written with KRA's path prefix ("https://etims-api-sbx.kra.go.ke/etims-api") is the
        # same host: the prefix is part of each OSCU path here.
        root = root.removesuffix(OSCU_PREFIX)
        limits = (
            timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)
        )
        # Never follow a redirect: it would resend the cmcKey header wherever Location points.
        self._http = httpx.AsyncClient(
            base_url=root, timeout=limits, transport=transport, follow_redirects=False
        )

    def __repr__(self) -> str:
        key = "set" if self._cmc_key else "none"
        return (
            f"EtimsClient(base_url={str(self._http.base_url)!r}, device_type={self.device_type!r}, "
            f"tin={self.tin!r}, bhf_id={self.bhf_id!r}, cmc_key=[{key}])"
        )

    async def __aenter__(self) -> EtimsClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the calls ----------------------------------------------------------------------------------

    async def initialize(self, device_serial: str) -> DeviceInfo:
        """Initialise the device; the answer holds the CMC key, which KRA hands out only this once.

        902 raises :class:`~connectors.etims.errors.DeviceAlreadyInstalled` (needs attention).
        The returned key is also used by this client from now on.
        """
        body = {"tin": self.tin, "bhfId": self.bhf_id, "dvcSrlNo": device_serial}
        envelope = await self._call(self._paths.init, body, with_key=False)
        info = _data(envelope).get("info")
        if not isinstance(info, dict):
            raise NeedsAttentionError("invalid_response", "the initialisation answer has no data.info")
        device = _device_info(info, self.tin, self.bhf_id)
        if device.cmc_key:
            self._cmc_key = device.cmc_key
        log.info("etims device initialised: tin=%s bhf=%s sdc=%s", self.tin, self.bhf_id, device.sdc_id)
        return device

    async def code_list(self, last_req_dt: str) -> list[CodeClass]:
        """The code classes changed since ``last_req_dt`` (YYYYMMDDhhmmss); 001 (nothing newer) -> []."""
        envelope = await self._call(self._paths.code_list, {**self._ids(), "lastReqDt": last_req_dt})
        if envelope["resultCd"] == etims_errors.NO_SEARCH_RESULT:
            return []
        return [_code_class(c) for c in _list(_data(envelope), "clsList")]

    async def item_classes(self, last_req_dt: str) -> list[ItemClass]:
        """The item classifications changed since ``last_req_dt``; 001 -> []."""
        envelope = await self._call(self._paths.item_classes, {**self._ids(), "lastReqDt": last_req_dt})
        if envelope["resultCd"] == etims_errors.NO_SEARCH_RESULT:
            return []
        return [_item_class(c) for c in _list(_data(envelope), "itemClsList")]

    async def save_item(self, payload: Mapping[str, Any]) -> None:
        """Register (or update) an item (mapping.item_payload).

        A 994 is taken as "this item code is already registered": item codes are allocated by us
        from a per-tenant sequence, so a repeat is our own earlier send whose answer was lost.
        """
        try:
            await self._call(self._paths.save_item, {**self._ids(), **payload})
        except ConnectorError as exc:
            if exc.code != etims_errors.DUPLICATE:
                raise
            log.info("etims item %s was already registered (994)", payload.get("itemCd"))

    async def save_sale(self, payload: Mapping[str, Any]) -> SaleReceipt:
        """Send one sale (mapping.sale_payload) and return what KRA signed.

        994 (OSCU) raises :class:`~connectors.etims.errors.DuplicateSale` with
        ``verified_duplicate=True``; VSCU's 899 raises it with ``verified_duplicate=False``. Neither
        is a success: verify with :meth:`find_sale`, never renumber.
        """
        envelope = await self._call(self._paths.save_sale, {**self._ids(), **payload})
        invc_no = _int_or_none(payload.get("invcNo"))
        return parse_receipt(_data(envelope), invc_no=invc_no)

    async def find_sale(self, invc_no: int) -> SaleReceipt | None:
        """What KRA holds for ``invc_no`` of this branch: the receipt, or None if it holds nothing.

        Why: after a send that timed out, a resend answers 994 (duplicate) and KRA's answer to the
        first send is lost; the receipt (internal data, signature, receipt numbers) is needed to
        record the sale as signed.

        UNCONFIRMED: KRA's OSCU specification documents no sales look-up by invcNo.
        navariltd/kenya-compliance and Odoo ``l10n_ke_edi_oscu`` have none either: on 994 they treat
        the sale as sent. Integrators report a "LOOK UP INVOICE DETAILS" test case
        (``/selectInvoiceDetails``, also spelled ``selectInvoiceDtl``, body ``{invcNo}``) and
        ``selectTrnsSalesList`` on KRA's newer OSCU sandbox, with gateway faults on some products; the
        answer's shape is unpublished, so it is read here as the sale answer's receipt fields. The
        VSCU path ``/trnsSales/selectSales`` is inferred from the JAR's naming. Our sandbox implements
        both as written here, so tests exercise the flow, not KRA's real behaviour.

        Raises :class:`~connectors.etims.errors.SaleLookupUnavailable` when the host has no such
        endpoint (HTTP 404/405/501 without an envelope): the caller then adopts the duplicate as signed
        with what it can recover (``adopted_existing``), or asks a person. A 5xx stays retryable: a
        gateway that is failing now may answer later (KRA's sandbox gateway has answered unknown
        routes with HTTP 500 "Unresolved variable : targetPath"; that too is retried, not adopted).
        """
        body = {**self._ids(), "invcNo": invc_no}
        path = self._paths.find_sale
        try:
            response = await self._send(path, body, with_key=True)
            if response.status_code in (404, 405, 501) and not _is_envelope(response):
                raise SaleLookupUnavailable(
                    f"{path}: HTTP {response.status_code}; this host offers no sales look-up",
                    details={"provider": PROVIDER, "endpoint": path},
                )
            envelope = self._envelope(path, response)
        except ConnectorError as exc:
            without_secrets(exc, [self._cmc_key or ""])
            raise
        if envelope["resultCd"] == etims_errors.NO_SEARCH_RESULT:
            return None
        data = _data(envelope)
        found = data.get("sale", data) if isinstance(data.get("sale"), dict) else data
        if not found:
            return None
        return parse_receipt(found, invc_no=invc_no)

    # -- the wire -----------------------------------------------------------------------------------

    def _ids(self) -> dict[str, str]:
        return {"tin": self.tin, "bhfId": self.bhf_id}

    def _headers(self, *, with_key: bool) -> dict[str, str]:
        headers = {"tin": self.tin, "bhfId": self.bhf_id}
        if with_key and self._cmc_key:
            headers["cmcKey"] = self._cmc_key
        return headers

    async def _call(self, path: str, body: Mapping[str, Any], *, with_key: bool = True) -> dict[str, Any]:
        try:
            response = await self._send(path, body, with_key=with_key)
            return self._envelope(path, response)
        except ConnectorError as exc:
            without_secrets(exc, [self._cmc_key or ""])
            raise

    async def _send(self, path: str, body: Mapping[str, Any], *, with_key: bool) -> httpx.Response:
        try:
            response = await self._http.post(path, json=dict(body), headers=self._headers(with_key=with_key))
        except httpx.TimeoutException as exc:
            raise RetryableError("timeout", f"POST {path}: {type(exc).__name__}") from exc
        except httpx.ConnectError as exc:
            raise RetryableError("connect_error", f"POST {path}: could not connect") from exc
        except httpx.TransportError as exc:
            raise RetryableError("transport_error", f"POST {path}: {type(exc).__name__}") from exc
        log.debug("etims POST %s -> HTTP %s", path, response.status_code)
        if response.is_redirect or 300 <= response.status_code < 400:
            raise NeedsAttentionError(
                "redirect_not_followed", f"POST {path}: HTTP {response.status_code} redirect, not followed"
            )
        return response

    def _envelope(self, path: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        body = _json_or_none(response)
        if isinstance(body, dict) and isinstance(body.get("resultCd"), str | int):
            code = str(body["resultCd"]).zfill(3)
            envelope = {**body, "resultCd": code}
            if etims_errors.is_success(code):
                return envelope
            raise etims_errors.error_for(
                code,
                str(body.get("resultMsg") or ""),
                endpoint=path.rsplit("/", 1)[-1],
                device_type=self.device_type,
                details={"http_status": status, "result_dt": body.get("resultDt")},
            )
        if status in (408, 429) or status >= 500:
            raise RetryableError(
                f"http_{status}",
                f"POST {path}: HTTP {status}",
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
                details={"provider": PROVIDER},
            )
        if not response.is_success:
            raise NeedsAttentionError(
                f"http_{status}", f"POST {path}: HTTP {status}", details={"provider": PROVIDER}
            )
        raise NeedsAttentionError("invalid_response", f"POST {path}: the answer is not an eTIMS envelope")


# -- reading answers ---------------------------------------------------------------------------------


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _is_envelope(response: httpx.Response) -> bool:
    body = _json_or_none(response)
    return isinstance(body, dict) and "resultCd" in body


def _data(envelope: Mapping[str, Any]) -> dict[str, Any]:
    data = envelope.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NeedsAttentionError("invalid_response", "the answer's data is not an object")
    return data


def _list(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise NeedsAttentionError("invalid_response", f"the answer's data.{key} is not a list of objects")
    return items


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _yes(value: Any) -> bool:
    return str(value).strip().upper() == "Y"


def _device_info(info: Mapping[str, Any], tin: str, bhf_id: str) -> DeviceInfo:
    keys = {name: str(info[name]) for name in ("intrlKey", "signKey") if info.get(name)}
    return DeviceInfo(
        tin=_text(info.get("tin")) or tin,
        taxpayer_name=_text(info.get("taxprNm")),
        bhf_id=_text(info.get("bhfId")) or bhf_id,
        branch_name=_text(info.get("bhfNm")),
        dvc_id=_text(info.get("dvcId")),
        sdc_id=_text(info.get("sdcId")),
        mrc_no=_text(info.get("mrcNo")),
        last_invc_no=_int_or_none(info.get("lastSaleInvcNo", info.get("lastInvcNo"))),
        cmc_key=_text(info.get("cmcKey")),
        keys=keys,
    )


def _code_class(raw: Mapping[str, Any]) -> CodeClass:
    details = raw.get("dtlList") or []
    if not isinstance(details, list):
        raise NeedsAttentionError("invalid_response", "a code class's dtlList is not a list")
    return CodeClass(
        code_class=str(raw.get("cdCls", "")),
        name=str(raw.get("cdClsNm", "")),
        codes=tuple(
            Code(
                code=str(d.get("cd", "")),
                name=str(d.get("cdNm", "")),
                user_defined_1=_text(d.get("userDfnCd1")),
                sort_order=_int_or_none(d.get("srtOrd")),
                in_use=_yes(d.get("useYn", "Y")),
            )
            for d in details
            if isinstance(d, dict)
        ),
    )


def _item_class(raw: Mapping[str, Any]) -> ItemClass:
    return ItemClass(
        code=str(raw.get("itemClsCd", "")),
        name=str(raw.get("itemClsNm", "")),
        level=_int_or_none(raw.get("itemClsLvl")),
        tax_type=_text(raw.get("taxTyCd")),
        major_target=_yes(raw.get("mjrTgYn")),
        in_use=_yes(raw.get("useYn", "Y")),
    )

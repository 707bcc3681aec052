"""TDS (tax deducted at source) on payments to resident vendors: the section, rate and threshold of a
payment under the Income-tax Act in force on its date, and the tax to deduct (issue 14, seed 002).

Pure: no I/O. What the tenant paid the vendor earlier in the year comes in as numbers
(:class:`PriorPayments`), so every rule is table-tested.

Two Acts:

- Income-tax Act 1961, sections 194C, 194H, 194-I, 194J, 194Q and 206AA, for payments up to 31 March 2026;
- Income-tax Act 2025 (in force from 1 April 2026, its section 1(3)), whose section 393(1) holds the
  payments to residents in one Table: Sl. No. 1(ii) commission or brokerage, 2(ii)(a)/(b) rent of
  plant / of land or building, 6(i) contractors, 6(iii) professional and technical fees, 8(ii) purchase
  of goods; section 397(2)(b) replaces 206AA.

Facts and sources (verified December 2026; dates are when a rule took effect):

- 194C 1% individual/HUF, 2% others; a single sum over 30,000 or a year's aggregate over 1,00,000
  (unchanged since Finance Act 2016; the 2025 Act's Table Sl. No. 6(i) keeps both limits).
- 194J 2% on fees for technical services (Finance Act 2020, from 1 April 2020), 10% on professional
  fees; 30,000 a year each, 50,000 from 1 April 2025 (Finance Act 2025). Table Sl. No. 6(iii): 2%/10%.
- 194H 5%, 2% from 1 October 2024 (Finance (No. 2) Act 2024); 15,000 a year, 20,000 from 1 April
  2025 (Finance Act 2025). Table Sl. No. 1(ii): 2%, 20,000.
- 194-I 2% plant and machinery, 10% land, building, furniture; 2,40,000 a year, then from 1 April 2025
  50,000 "for a month or part of a month" (Finance Act 2025). Table Sl. No. 2(ii): same.
- 194Q (from 1 July 2021, Finance Act 2021) 0.1% of the amount by which the year's purchases from the
  seller exceed 50,00,000, only for a buyer whose turnover exceeded 10 crore in the preceding year.
  Table Sl. No. 8(ii) and the "buyer" of the Chapter's interpretation clause: same.
- 206AA (and 2025 Act s. 397(2)(b)): a payee who furnishes no valid PAN suffers the higher of the
  section's rate and 20% (5% for 194Q). An inoperative PAN (not linked with Aadhaar, rule 114AAA,
  consequences from 1 July 2023 per CBDT Circular 3/2023) counts as not furnished. Note: 206AA is
  "the higher of the rate or 20%", not "twice the rate" (that was section 206AB, omitted by the
  Finance Act 2025).
- No surcharge and no health and education cess is added to TDS on payments to residents other than
  salary: the Finance Act's rates for deduction at source add them only for salary and for payments
  to non-residents. The seed's 4% cess on a 194J fee is wrong in law. Non-residents are a section 195
  (2025 Act s. 393(2)) matter with treaty rates: refused here.
- Rounding: the tax deducted is rounded to the nearest rupee, 50 paise and more up (section 288B as
  it stood, and CBDT Circular 49 of 16-11-1970 applying the rounding at the time of deduction). The
  2016 text of 288B and the 2025 Act's section 516 speak of the nearest ten rupees for "any amount
  payable"; returns and certificates carry the rupee amount deducted per payment, so per-payment
  rupee rounding is what is done here (docs/tds.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from stdnum.in_ import pan as stdnum_pan

from engine.tax.errors import TaxRuleError, Violation

NATURES = (
    "professional_services",
    "technical_services",
    "contractor",
    "commission",
    "rent_building",
    "rent_plant",
    "purchase_of_goods",
)
ACT_1961 = "Income-tax Act, 1961"
ACT_2025 = "Income-tax Act, 2025"
ACT_2025_FROM = date(2026, 4, 1)
# The earliest payment date the tables below describe: FY 2021-22. Earlier years had the COVID-19
# rate cut (14 May 2020 to 31 March 2021, 25% off 194C/194H/194-I/194J) which is not modelled.
SUPPORTED_FROM = date(2021, 4, 1)
NO_PAN_RATE = Decimal("20")
NO_PAN_RATE_PURCHASE = Decimal("5")
PAN_NOT_AVAILABLE = "PANNOTAVBL"
"""What Form 26Q carries in the PAN column for a deductee without a PAN."""

ZERO = Decimal("0")
RUPEE = Decimal("1")
PAISA = Decimal("0.01")


@dataclass(frozen=True)
class Rule:
    """One provision for one nature of payment, in force from ``since`` up to ``until`` (inclusive)."""

    nature: str
    since: date
    until: date | None
    act: str
    section: str
    """The provision named as practitioners and returns name it: "194J", "393(1) Table Sl. No. 6(iii)"."""
    rate: Decimal
    """Percent, for a payee with a valid PAN; ``rate_individual`` for an individual or HUF when set."""
    rate_individual: Decimal | None = None
    single_limit: Decimal | None = None
    """Tax is due on a single sum above this (194C)."""
    annual_limit: Decimal | None = None
    """Tax is due once the year's aggregate exceeds this."""
    monthly_limit: Decimal | None = None
    """Rent from 1 April 2025: tax is due when the rent for a month or part of a month exceeds this."""
    only_excess: bool = False
    """194Q: tax on the part of the year's aggregate above ``annual_limit`` only."""
    group: str = ""
    """Payments counted together for the annual limit (194-I rent counts plant and building together)."""
    code_26q: str | None = None
    """The section code of Form 26Q (TRACES/NSDL file format), for 1961-Act payments."""
    higher_rate_provision: str = "206AA"


def _d(text: str) -> Decimal:
    return Decimal(text)


_Y2021 = SUPPORTED_FROM
_Y2025 = date(2025, 4, 1)
_END_1961 = date(2026, 3, 31)
_T = "393(1) Table Sl. No. "
_AFTER_1961 = "397(2)(b)"

RULES: tuple[Rule, ...] = (
    # -- Income-tax Act 1961 --------------------------------------------------------------------
    Rule("contractor", _Y2021, _END_1961, ACT_1961, "194C", _d("2"), _d("1"), _d("30000"), _d("100000"),
         group="contractor", code_26q="94C"),
    Rule("professional_services", _Y2021, date(2025, 3, 31), ACT_1961, "194J", _d("10"),
         annual_limit=_d("30000"), group="professional", code_26q="4JB"),
    Rule("professional_services", _Y2025, _END_1961, ACT_1961, "194J", _d("10"),
         annual_limit=_d("50000"), group="professional", code_26q="4JB"),
    Rule("technical_services", _Y2021, date(2025, 3, 31), ACT_1961, "194J", _d("2"),
         annual_limit=_d("30000"), group="technical", code_26q="4JA"),
    Rule("technical_services", _Y2025, _END_1961, ACT_1961, "194J", _d("2"),
         annual_limit=_d("50000"), group="technical", code_26q="4JA"),
    Rule("commission", _Y2021, date(2024, 9, 30), ACT_1961, "194H", _d("5"),
         annual_limit=_d("15000"), group="commission", code_26q="94H"),
    Rule("commission", date(2024, 10, 1), date(2025, 3, 31), ACT_1961, "194H", _d("2"),
         annual_limit=_d("15000"), group="commission", code_26q="94H"),
    Rule("commission", _Y2025, _END_1961, ACT_1961, "194H", _d("2"),
         annual_limit=_d("20000"), group="commission", code_26q="94H"),
    Rule("rent_plant", _Y2021, date(2025, 3, 31), ACT_1961, "194-I(a)", _d("2"),
         annual_limit=_d("240000"), group="rent", code_26q="4IA"),
    Rule("rent_building", _Y2021, date(2025, 3, 31), ACT_1961, "194-I(b)", _d("10"),
         annual_limit=_d("240000"), group="rent", code_26q="4IB"),
    Rule("rent_plant", _Y2025, _END_1961, ACT_1961, "194-I(a)", _d("2"),
         monthly_limit=_d("50000"), group="rent", code_26q="4IA"),
    Rule("rent_building", _Y2025, _END_1961, ACT_1961, "194-I(b)", _d("10"),
         monthly_limit=_d("50000"), group="rent", code_26q="4IB"),
    Rule("purchase_of_goods", date(2021, 7, 1), _END_1961, ACT_1961, "194Q", _d("0.1"),
         annual_limit=_d("5000000"), only_excess=True, group="purchase", code_26q="94Q"),
    # -- Income-tax Act 2025 (from 1 April 2026) ------------------------------------------------
    Rule("contractor", ACT_2025_FROM, None, ACT_2025, _T + "6(i)", _d("2"), _d("1"), _d("30000"),
         _d("100000"), group="contractor", higher_rate_provision=_AFTER_1961),
    Rule("professional_services", ACT_2025_FROM, None, ACT_2025, _T + "6(iii)", _d("10"),
         annual_limit=_d("50000"), group="professional", higher_rate_provision=_AFTER_1961),
    Rule("technical_services", ACT_2025_FROM, None, ACT_2025, _T + "6(iii)", _d("2"),
         annual_limit=_d("50000"), group="technical", higher_rate_provision=_AFTER_1961),
    Rule("commission", ACT_2025_FROM, None, ACT_2025, _T + "1(ii)", _d("2"),
         annual_limit=_d("20000"), group="commission", higher_rate_provision=_AFTER_1961),
    Rule("rent_plant", ACT_2025_FROM, None, ACT_2025, _T + "2(ii)(a)", _d("2"),
         monthly_limit=_d("50000"), group="rent", higher_rate_provision=_AFTER_1961),
    Rule("rent_building", ACT_2025_FROM, None, ACT_2025, _T + "2(ii)(b)", _d("10"),
         monthly_limit=_d("50000"), group="rent", higher_rate_provision=_AFTER_1961),
    Rule("purchase_of_goods", ACT_2025_FROM, None, ACT_2025, _T + "8(ii)", _d("0.1"),
         annual_limit=_d("5000000"), only_excess=True, group="purchase", higher_rate_provision=_AFTER_1961),
)  # fmt: skip


def rule_for(nature: str, day: date) -> Rule | None:
    """The provision in force for ``nature`` on ``day``, or None (before 194Q existed, say)."""
    for rule in RULES:
        if rule.nature == nature and rule.since <= day and (rule.until is None or day <= rule.until):
            return rule
    return None


def act_in_force(day: date) -> str:
    return ACT_2025 if day >= ACT_2025_FROM else ACT_1961


# -- financial years and quarters ----------------------------------------------------------------


def parse_financial_year(text: str) -> int | None:
    """The first calendar year of a financial year written "2025-26" (None when malformed)."""
    if (
        len(text) != 7
        or not text.isascii()
        or text[4] != "-"
        or not (text[:4].isdigit() and text[5:].isdigit())
    ):
        return None
    start = int(text[:4])
    if (start + 1) % 100 != int(text[5:]) or not 2000 <= start <= 2098:
        return None
    return start


def financial_year_of(day: date) -> str:
    start = day.year if day.month >= 4 else day.year - 1
    return f"{start}-{(start + 1) % 100:02d}"


def quarter_of(day: date) -> int:
    """1 = April-June ... 4 = January-March (the quarters of Form 26Q)."""
    return ((day.month - 4) % 12) // 3 + 1


def quarter_bounds(start_year: int, quarter: int) -> tuple[date, date]:
    first_month = 4 + 3 * (quarter - 1)
    year = start_year if first_month <= 12 else start_year + 1
    first_month = first_month if first_month <= 12 else first_month - 12
    last_month = first_month + 2
    end = date(year, last_month + 1, 1) if last_month < 12 else date(year + 1, 1, 1)
    return date(year, first_month, 1), date.fromordinal(end.toordinal() - 1)


# -- PAN -----------------------------------------------------------------------------------------

PAN_STATUSES = ("valid", "missing", "invalid", "inoperative")


@dataclass(frozen=True)
class PanCheck:
    status: str
    pan: str | None
    """The PAN in upper case when its format is valid."""
    holder_type: str | None
    """The 4th character's holder type (P individual, H HUF, C company, F firm ...)."""

    @property
    def furnished(self) -> bool:
        return self.status == "valid"


# Fourth character of a PAN and its holder (Income Tax Department's PAN structure; python-stdnum's
# in_.pan has the same list).
INDIVIDUAL_OR_HUF = frozenset({"P", "H"})


def check_pan(pan: str | None, *, inoperative: bool = False) -> PanCheck:
    """The PAN's status for 206AA: missing, invalid (format or check by python-stdnum), inoperative
    (the caller knows it from the e-filing portal's status check; we cannot), or valid."""
    if pan is None or not pan.strip():
        return PanCheck("missing", None, None)
    clean = pan.strip().upper()
    if not (clean.isascii() and stdnum_pan.is_valid(clean)):
        return PanCheck("invalid", None, None)
    if inoperative:
        return PanCheck("inoperative", clean, clean[3])
    return PanCheck("valid", clean, clean[3])


# -- the calculation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PriorPayments:
    """What was paid to the same payee earlier in the same financial year, in the same threshold
    group (amounts excluding GST)."""

    amount: Decimal = ZERO
    """Everything paid before, recorded or declared (``paid_so_far``)."""
    untaxed: Decimal = ZERO
    """The part of ``amount`` recorded with no tax deducted (below a threshold then): once the year's
    aggregate crosses the limit, tax is due on the entire amount, these included."""


@dataclass(frozen=True)
class TdsRequest:
    nature: str
    amount: Decimal
    day: date
    pan: str | None
    pan_inoperative: bool = False
    resident: bool = True
    buyer_turnover_above_10_crore: bool = False
    rent_months: int = 1
    prior: PriorPayments = field(default_factory=PriorPayments)


@dataclass(frozen=True)
class Threshold:
    kind: str
    """single_or_annual (194C), annual, monthly (rent from 1 April 2025), annual_excess (194Q)."""
    single_limit: Decimal | None
    annual_limit: Decimal | None
    monthly_limit: Decimal | None
    paid_before: Decimal
    aggregate: Decimal
    exceeded: bool


@dataclass(frozen=True)
class TdsResult:
    act: str
    section: str
    code_26q: str | None
    rate: Decimal
    section_rate: Decimal
    higher_rate: bool
    """True when the rate is raised for want of a valid PAN (206AA / 397(2)(b))."""
    higher_rate_provision: str | None
    pan: PanCheck
    taxable_amount: Decimal
    """The amount the rate applies to: the payment, plus earlier untaxed payments once a yearly limit
    is crossed, or only the excess over the limit (194Q)."""
    catch_up_amount: Decimal
    tds_amount: Decimal
    surcharge: Decimal
    cess: Decimal
    total_tds: Decimal
    net_payment: Decimal
    threshold: Threshold
    notes: tuple[str, ...]


def _violation(path: str, code: str, message: str, **details: object) -> TaxRuleError:
    return TaxRuleError([Violation(path, code, message, dict(details))])


def round_tds(amount: Decimal) -> Decimal:
    """Nearest rupee, 50 paise and more up (section 288B as applied to deductions, see module doc)."""
    return amount.quantize(RUPEE, rounding=ROUND_HALF_UP)


def _threshold(rule: Rule, request: TdsRequest) -> tuple[Threshold, Decimal, Decimal]:
    """The threshold test and (taxable amount, catch-up amount)."""
    prior = request.prior
    amount = request.amount
    aggregate = prior.amount + amount
    if rule.monthly_limit is not None:
        limit = rule.monthly_limit * request.rent_months
        exceeded = amount > limit
        return (
            Threshold("monthly", None, None, rule.monthly_limit, prior.amount, aggregate, exceeded),
            amount if exceeded else ZERO,
            ZERO,
        )
    assert rule.annual_limit is not None
    if rule.only_excess:
        before_excess = max(prior.amount - rule.annual_limit, ZERO)
        after_excess = max(aggregate - rule.annual_limit, ZERO)
        taxable = after_excess - before_excess
        return (
            Threshold(
                "annual_excess", None, rule.annual_limit, None, prior.amount, aggregate, after_excess > 0
            ),
            taxable,
            ZERO,
        )
    single = rule.single_limit is not None and amount > rule.single_limit
    annual = aggregate > rule.annual_limit
    kind = "single_or_annual" if rule.single_limit is not None else "annual"
    threshold = Threshold(
        kind, rule.single_limit, rule.annual_limit, None, prior.amount, aggregate, single or annual
    )
    if not (single or annual):
        return threshold, ZERO, ZERO
    # The yearly limit crossed now: tax is due "on the entire amount" (194C(5), 194J(1), 194H, and the
    # 2025 Act's s. 393(1)(a)), so earlier payments left untaxed below the limit are caught up.
    catch_up = prior.untaxed if annual else ZERO
    return threshold, amount + catch_up, catch_up


def calculate_tds(request: TdsRequest) -> TdsResult:
    """The TDS on one payment to a resident (raises :class:`TaxRuleError` for what the law here does
    not cover: a non-resident, a nature unknown, a date before ``SUPPORTED_FROM``)."""
    if not request.resident:
        raise _violation(
            "resident",
            "non_resident_not_supported",
            "resident: payments to non-residents are taxed under section 195 of the 1961 Act (section "
            "393(2) of the 2025 Act) at rates in force or under a tax treaty, with surcharge and cess; "
            "this calculator covers resident payees only.",
        )
    if request.nature not in NATURES:
        raise _violation(
            "payment_nature",
            "unknown_payment_nature",
            f"payment_nature: {request.nature!r} is not one of {', '.join(NATURES)}.",
            allowed=list(NATURES),
        )
    if request.day < SUPPORTED_FROM:
        raise _violation(
            "financial_year",
            "before_supported_period",
            f"payments before {SUPPORTED_FROM.isoformat()} are not covered"
            " (the 2020-21 rate cut is not modelled).",
            earliest=SUPPORTED_FROM.isoformat(),
        )
    if request.amount <= 0:
        raise _violation("payment_amount", "not_positive", "payment_amount: must be more than zero.")
    if request.rent_months < 1:
        raise _violation("rent_months", "not_positive", "rent_months: at least one month.")
    rule = rule_for(request.nature, request.day)
    if rule is None:
        raise _violation(
            "payment_nature",
            "provision_not_in_force",
            f"payment_nature: no TDS provision for {request.nature} on {request.day.isoformat()}"
            " (section 194Q applies from 1 July 2021).",
        )
    pan = check_pan(request.pan, inoperative=request.pan_inoperative)
    notes: list[str] = []
    section_rate = rule.rate
    if rule.rate_individual is not None:
        if pan.holder_type in INDIVIDUAL_OR_HUF:
            section_rate = rule.rate_individual
        elif pan.holder_type is None:
            notes.append(
                "without a valid PAN the payee's type is unknown: the rate for others applies before 206AA"
            )
    threshold, taxable, catch_up = _threshold(rule, request)
    applies = True
    if rule.nature == "purchase_of_goods" and not request.buyer_turnover_above_10_crore:
        applies = False
        taxable, catch_up = ZERO, ZERO
        notes.append(
            "section 194Q binds only a buyer whose turnover exceeded 10 crore rupees in the preceding"
            " financial year: nothing to deduct"
        )
    higher = not pan.furnished
    floor = NO_PAN_RATE_PURCHASE if rule.nature == "purchase_of_goods" else NO_PAN_RATE
    rate = max(section_rate, floor) if higher else section_rate
    if higher and applies:
        notes.append(
            f"PAN {pan.status}: tax at the higher of the section's rate and {floor}% "
            f"({rule.higher_rate_provision} of the {rule.act})"
        )
    if not threshold.exceeded and applies:
        notes.append("below the threshold: nothing to deduct on this payment")
    tds = round_tds(taxable * rate / 100) if taxable > 0 else ZERO
    if catch_up > 0:
        notes.append(
            f"the year's aggregate crossed {threshold.annual_limit}:"
            f" tax also on {catch_up} paid earlier without deduction"
        )
    if tds > request.amount:
        notes.append("the tax due exceeds this payment: the balance must be deposited by the deductor")
    return TdsResult(
        act=rule.act,
        section=rule.section,
        code_26q=rule.code_26q,
        rate=rate,
        section_rate=section_rate,
        higher_rate=higher and applies,
        higher_rate_provision=rule.higher_rate_provision if higher and applies else None,
        pan=pan,
        taxable_amount=taxable,
        catch_up_amount=catch_up,
        tds_amount=tds,
        surcharge=ZERO,
        cess=ZERO,
        total_tds=tds,
        net_payment=max(request.amount - tds, ZERO),
        threshold=threshold,
        notes=tuple(notes),
    )


def threshold_group(nature: str) -> str:
    """The payments counted together for a payee's yearly limit (same on both Acts)."""
    for rule in RULES:
        if rule.nature == nature:
            return rule.group
    raise KeyError(nature)

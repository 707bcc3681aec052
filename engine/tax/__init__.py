"""Pure Indian GST rules: state codes, GSTIN validation, effective-dated rates and invoice tax.

Nothing here does I/O except reading the packaged rate master (``data/hsn_*.tsv.gz``) on first use.
"""

from engine.tax.errors import TaxRuleError, Violation
from engine.tax.gstin import GstinInfo, check_character, classify_gstin, gstin_state, validate_gstin
from engine.tax.india_gst import (
    InvoiceTax,
    LineInput,
    LineTax,
    SupplyType,
    compute_invoice_tax,
    financial_year,
)
from engine.tax.rates import RateEntry, master_rate, valid_rates_on
from engine.tax.states import STATES, State, normalise_state

__all__ = [
    "STATES",
    "GstinInfo",
    "InvoiceTax",
    "LineInput",
    "LineTax",
    "RateEntry",
    "State",
    "SupplyType",
    "TaxRuleError",
    "Violation",
    "check_character",
    "classify_gstin",
    "compute_invoice_tax",
    "financial_year",
    "gstin_state",
    "master_rate",
    "normalise_state",
    "valid_rates_on",
    "validate_gstin",
]

-- Kenya VAT rates per eTIMS tax type (A-E) as KRA's code list class 04 gives them, per environment
-- (sandbox and production may differ). etims-devices writes them on a class-04 sync; Kenyan
-- invoices read them, and a type without a row uses engine/tax/kenya_vat.py DEFAULT_RATES.
-- Idempotent: run at every start (engine/db.py MIGRATIONS).
CREATE TABLE IF NOT EXISTS etims_tax_rates (
    environment text NOT NULL,
    tax_type    text NOT NULL,
    rate        numeric(5, 2) NOT NULL,
    name        text,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, tax_type)
);

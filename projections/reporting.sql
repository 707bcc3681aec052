-- The analysts' reporting schema: stable views over the projections (docs/reporting.md).
-- A template: {reporting} is the reporting schema and {base} the engine's schema, filled in by
-- projections/reporting.py, which runs this inside the caller's transaction.
--
-- Views are a contract: columns are added at the end, never renamed, retyped or removed.
-- security_invoker: a view reads the table with its caller's rights, so the row-level security
-- policy on invoice_register applies to a tenant role querying the view (PostgreSQL 15+).

CREATE SCHEMA IF NOT EXISTS {reporting};

-- Which database role reads which tenant. One tenant per role; `ledgerflow reporting grant` writes it.
CREATE TABLE IF NOT EXISTS {reporting}.tenant_roles (
    role_name  text PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now()
);
-- A tenant role must read its own row (the policy below looks it up as that role), and only that.
ALTER TABLE {reporting}.tenant_roles ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_mapping ON {reporting}.tenant_roles;
CREATE POLICY own_mapping ON {reporting}.tenant_roles FOR SELECT USING (role_name = current_user);

-- GST state codes and names (engine/tax/states.py), for place_of_supply_name; rows are upserted.
CREATE TABLE IF NOT EXISTS {reporting}.gst_states (
    code  text PRIMARY KEY,
    alpha text,
    name  text NOT NULL
);

-- What the last full installation created, so that an unchanged installation is not redone at
-- every process start (CREATE OR REPLACE VIEW and CREATE POLICY take exclusive locks).
CREATE TABLE IF NOT EXISTS {reporting}.installation (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    fingerprint  text NOT NULL,
    register_oid oid NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- Tenant isolation: a role that is not the table's owner sees only the rows of the tenant
-- tenant_roles maps it to (none when unmapped). The owner, the engine itself, is not subject to
-- row-level security because it is not FORCEd.
ALTER TABLE {base}.invoice_register ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_rows ON {base}.invoice_register;
CREATE POLICY tenant_rows ON {base}.invoice_register FOR SELECT
    USING (tenant_id = (SELECT t.tenant_id FROM {reporting}.tenant_roles AS t WHERE t.role_name = current_user));

CREATE OR REPLACE VIEW {reporting}.invoices WITH (security_invoker = true) AS
SELECT
    r.tenant_id,
    r.invoice_id,
    r.number AS invoice_number,
    r.financial_year,
    r.invoice_date,
    date_trunc('month', r.invoice_date)::date AS period,
    r.status,
    r.supply_type,
    r.buyer_name,
    r.buyer_gstin,
    r.place_of_supply,
    s.name AS place_of_supply_name,
    (r.document ->> 'intra_state')::boolean AS intra_state,
    r.taxable,
    r.cgst,
    r.sgst,
    r.igst,
    r.cess,
    (r.cgst + r.sgst + r.igst + r.cess)::numeric(18, 2) AS total_tax,
    r.total,
    r.issued_at,
    r.cancelled_at,
    r.cancellation ->> 'reason' AS cancellation_reason,
    r.irn,
    CASE
        WHEN r.einvoice_cancellation IS NOT NULL THEN 'cancelled'
        WHEN r.einvoice IS NOT NULL THEN 'generated'
        WHEN r.einvoice_failure IS NOT NULL THEN 'failed'
        ELSE 'none'
    END AS einvoice_status
FROM {base}.invoice_register AS r
LEFT JOIN {reporting}.gst_states AS s ON s.code = r.place_of_supply;

CREATE OR REPLACE VIEW {reporting}.invoice_lines WITH (security_invoker = true) AS
SELECT
    r.tenant_id,
    r.invoice_id,
    r.number AS invoice_number,
    r.invoice_date,
    date_trunc('month', r.invoice_date)::date AS period,
    r.status,
    r.supply_type,
    r.place_of_supply,
    (l.line ->> 'line_no')::integer AS line_no,
    l.line ->> 'description' AS description,
    l.line ->> 'hsn' AS hsn,
    (l.line ->> 'quantity')::numeric(18, 3) AS quantity,
    l.line ->> 'unit' AS unit,
    (l.line ->> 'unit_price')::numeric(18, 3) AS unit_price,
    (l.line ->> 'discount')::numeric(18, 2) AS discount,
    (l.line ->> 'taxable_value')::numeric(18, 2) AS taxable_value,
    (l.line ->> 'gst_rate')::numeric(6, 3) AS gst_rate,
    l.line ->> 'rate_source' AS rate_source,
    (l.line ->> 'cgst')::numeric(18, 2) AS cgst,
    (l.line ->> 'sgst')::numeric(18, 2) AS sgst,
    (l.line ->> 'igst')::numeric(18, 2) AS igst,
    (l.line ->> 'cess_rate')::numeric(6, 3) AS cess_rate,
    (l.line ->> 'cess')::numeric(18, 2) AS cess,
    (l.line ->> 'total')::numeric(18, 2) AS total
FROM {base}.invoice_register AS r
CROSS JOIN LATERAL json_array_elements(r.document -> 'lines') AS l (line);

-- Cancelled invoices are left out of the sums (a cancelled invoice is not reported in GSTR-1) and
-- counted beside them, so that the month still reconciles with the invoice register.
CREATE OR REPLACE VIEW {reporting}.invoice_tax_summary WITH (security_invoker = true) AS
SELECT
    i.tenant_id,
    i.period,
    i.supply_type,
    i.place_of_supply,
    i.place_of_supply_name,
    count(*) FILTER (WHERE i.status <> 'cancelled') AS invoice_count,
    coalesce(sum(i.taxable) FILTER (WHERE i.status <> 'cancelled'), 0)::numeric(18, 2) AS taxable,
    coalesce(sum(i.cgst) FILTER (WHERE i.status <> 'cancelled'), 0)::numeric(18, 2) AS cgst,
    coalesce(sum(i.sgst) FILTER (WHERE i.status <> 'cancelled'), 0)::numeric(18, 2) AS sgst,
    coalesce(sum(i.igst) FILTER (WHERE i.status <> 'cancelled'), 0)::numeric(18, 2) AS igst,
    coalesce(sum(i.cess) FILTER (WHERE i.status <> 'cancelled'), 0)::numeric(18, 2) AS cess,
    coalesce(sum(i.total_tax) FILTER (WHERE i.status <> 'cancelled'), 0)::numeric(18, 2) AS total_tax,
    coalesce(sum(i.total) FILTER (WHERE i.status <> 'cancelled'), 0)::numeric(18, 2) AS total,
    count(*) FILTER (WHERE i.status = 'cancelled') AS cancelled_count,
    coalesce(sum(i.total) FILTER (WHERE i.status = 'cancelled'), 0)::numeric(18, 2) AS cancelled_total
FROM {reporting}.invoices AS i
GROUP BY i.tenant_id, i.period, i.supply_type, i.place_of_supply, i.place_of_supply_name;

-- GSTR-1 table 12 (HSN-wise summary of outward supplies): cancelled invoices are left out.
CREATE OR REPLACE VIEW {reporting}.hsn_summary WITH (security_invoker = true) AS
SELECT
    l.tenant_id,
    l.period,
    l.supply_type,
    l.hsn,
    l.unit,
    l.gst_rate,
    count(DISTINCT l.invoice_id) AS invoice_count,
    sum(l.quantity)::numeric(18, 3) AS quantity,
    sum(l.taxable_value)::numeric(18, 2) AS taxable_value,
    sum(l.cgst)::numeric(18, 2) AS cgst,
    sum(l.sgst)::numeric(18, 2) AS sgst,
    sum(l.igst)::numeric(18, 2) AS igst,
    sum(l.cess)::numeric(18, 2) AS cess,
    sum(l.total)::numeric(18, 2) AS total
FROM {reporting}.invoice_lines AS l
WHERE l.status <> 'cancelled'
GROUP BY l.tenant_id, l.period, l.supply_type, l.hsn, l.unit, l.gst_rate;

-- The IRP gives acknowledgement and cancellation times as Indian Standard Time without a zone.
CREATE OR REPLACE VIEW {reporting}.einvoice_status WITH (security_invoker = true) AS
SELECT
    r.tenant_id,
    r.invoice_id,
    r.number AS invoice_number,
    r.invoice_date,
    r.status AS invoice_status,
    r.supply_type,
    r.buyer_gstin,
    r.total,
    CASE
        WHEN r.einvoice_cancellation IS NOT NULL THEN 'cancelled'
        WHEN r.einvoice IS NOT NULL THEN 'generated'
        WHEN r.einvoice_failure IS NOT NULL THEN 'failed'
        ELSE 'none'
    END AS einvoice_status,
    r.irn,
    r.einvoice ->> 'ack_no' AS ack_no,
    to_timestamp((r.einvoice ->> 'ack_date') || ' +05:30', 'YYYY-MM-DD HH24:MI:SS TZH:TZM') AS acknowledged_at,
    (r.einvoice ->> 'adopted_existing')::boolean AS adopted_existing,
    to_timestamp(
        (r.einvoice_cancellation ->> 'cancel_date') || ' +05:30', 'YYYY-MM-DD HH24:MI:SS TZH:TZM'
    ) AS irn_cancelled_at,
    (r.einvoice_cancellation ->> 'reason_code')::integer AS irn_cancel_reason_code,
    r.einvoice_failure ->> 'operation' AS failure_operation,
    r.einvoice_failure ->> 'error_class' AS failure_class,
    r.einvoice_failure ->> 'code' AS failure_code,
    r.einvoice_failure ->> 'message' AS failure_message,
    (r.einvoice_failure ->> 'attempts')::integer AS failure_attempts
FROM {base}.invoice_register AS r;

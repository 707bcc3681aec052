-- reconciliation: bank statement lines and what they settle (projections/reconciliation.py), the read
-- model behind GET /v1/reconciliation and its CSV. One table holds every fact the matching needs, one
-- row each (kind = line, payment, payout, invoice or manual), so that the projection is rebuilt with
-- the shadow-table swap every projection uses (projections/rebuild.py).
CREATE TABLE IF NOT EXISTS reconciliation (
    -- '<kind>:<entity id>'
    row_id          text PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    kind            text NOT NULL,
    entity_id       text NOT NULL,
    -- line: the bank account; payout/invoice/payment: null
    account         text,
    -- line: value date; payment: paid date; payout: requested, then completed date; invoice: its date
    day             date,
    -- line: signed (credits positive); targets: positive
    amount          numeric(20, 4),
    magnitude       numeric(20, 4),
    currency        text,
    reference       text,
    description     text,
    counterparty    text,
    charges         numeric(20, 4) NOT NULL DEFAULT 0,
    -- line: the words that can be references; targets: their normalised references
    refs            text[] NOT NULL DEFAULT '{}',
    -- targets: open to matching (captured payment, completed payout, issued invoice)
    eligible        boolean NOT NULL DEFAULT false,
    -- line: matched | partially_matched | unmatched | discrepancy
    status          text,
    method          text,
    -- line: [{"type", "id"}] of what it settles
    targets         jsonb,
    matched_amount  numeric(20, 4),
    difference      numeric(20, 4),
    -- payment/payout: the line that settles it
    taken_by        text,
    -- manual: the line, the target and whether it stands (an undone match stays, inactive)
    line_id         text,
    target_type     text,
    target_id       text,
    active          boolean,
    made_by         text,
    last_event_id   text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS reconciliation_lines ON reconciliation (tenant_id, day, row_id) WHERE kind = 'line';
CREATE INDEX IF NOT EXISTS reconciliation_magnitude ON reconciliation (tenant_id, magnitude);
CREATE INDEX IF NOT EXISTS reconciliation_refs ON reconciliation USING gin (refs);
CREATE INDEX IF NOT EXISTS reconciliation_manual ON reconciliation (tenant_id, line_id) WHERE kind = 'manual';
CREATE INDEX IF NOT EXISTS reconciliation_taken ON reconciliation (taken_by) WHERE taken_by IS NOT NULL;

-- payment_register: one row per gateway payment (engine/payments.py), the read model behind
-- GET /v1/payments, the payment fields of GET /v1/invoices/{id} and GET /v1/receivables.
-- Written from the Payment aggregate's state after each change, guarded by its version, so an older
-- state never overwrites a newer one; rebuildable from the event store.
CREATE TABLE IF NOT EXISTS payment_register (
    payment_id          uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    provider            text NOT NULL,
    provider_payment_id text NOT NULL,
    status              text NOT NULL,
    amount              numeric(20, 4) NOT NULL,
    amount_refunded     numeric(20, 4) NOT NULL,
    amount_applied      numeric(20, 4) NOT NULL,
    currency            text NOT NULL,
    customer_key        text,
    invoice_id          uuid,
    paid_at             timestamptz NOT NULL,
    document            jsonb NOT NULL,
    version             integer NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payment_register_tenant_paid
    ON payment_register (tenant_id, paid_at, payment_id);
CREATE INDEX IF NOT EXISTS payment_register_invoice
    ON payment_register (tenant_id, invoice_id) WHERE invoice_id IS NOT NULL;

-- How far the hook processor (streams/hooks.py) has read the inbox's notification log.
CREATE TABLE IF NOT EXISTS inbound_webhook_position (
    consumer   text PRIMARY KEY,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

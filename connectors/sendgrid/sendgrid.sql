-- Alert emails sent through SendGrid (connectors/sendgrid/handler.py): one row per alert once its
-- mail was accepted (202), so that a redelivered alert or job is not emailed twice.
CREATE TABLE IF NOT EXISTS sendgrid_alert_emails (
    alert_id   uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    recipients jsonb NOT NULL,
    message_id text NOT NULL DEFAULT '',
    sent_at    timestamptz NOT NULL DEFAULT now()
);

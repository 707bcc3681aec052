-- A table a connector declares for itself (Connector.migrations), as test_connector_state.py uses it.
CREATE TABLE IF NOT EXISTS example_connector_devices (
    tenant_id uuid NOT NULL,
    branch    text NOT NULL,
    device_id text NOT NULL,
    PRIMARY KEY (tenant_id, branch)
);

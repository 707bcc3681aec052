-- Kenya eTIMS: devices, code lists, items and company suspension (connectors/etims/devices.py,
-- codes.py, items.py). Idempotent: `ledgerflow db migrate` runs it after the engine's migrations.
-- No table here holds a key: the CMC key lives only in connector_secrets (sealed), scope
-- cmc:<environment>:<bhf_id>.

-- One device per tenant, branch and environment (issue 10: the environment lives only in the
-- integration; switching it initialises the devices again there).
CREATE TABLE IF NOT EXISTS etims_devices (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    environment     text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    bhf_id          text NOT NULL,
    device_serial   text NOT NULL,
    device_type     text NOT NULL CHECK (device_type IN ('oscu', 'vscu')),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'initialized', 'failed', 'offline')),
    dvc_id          text,
    sdc_id          text,
    mrc_no          text,
    taxpayer_name   text,
    branch_name     text,
    last_success_at timestamptz,
    last_failure    jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, environment, bhf_id)
);
CREATE INDEX IF NOT EXISTS etims_devices_offline_check ON etims_devices (status, last_success_at);

-- KRA's code lists (selectCodeList) per environment: national, the same for every taxpayer.
CREATE TABLE IF NOT EXISTS etims_code_lists (
    environment  text NOT NULL,
    cd_cls       text NOT NULL,   -- class, e.g. 04 tax type, 10 quantity unit, 17 packaging unit
    cd           text NOT NULL,
    cd_nm        text NOT NULL,
    user_dfn_cd1 text,            -- class 04: the rate in percent
    use_yn       boolean NOT NULL DEFAULT true,
    synced_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, cd_cls, cd)
);

-- Item classification codes (selectItemClsList) per environment.
CREATE TABLE IF NOT EXISTS etims_item_classes (
    environment  text NOT NULL,
    item_cls_cd  text NOT NULL,
    item_cls_nm  text NOT NULL,
    item_cls_lvl integer,
    tax_ty_cd    text,
    use_yn       boolean NOT NULL DEFAULT true,
    synced_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, item_cls_cd)
);

-- lastReqDt per environment and look-up: the next sync asks only for changes since.
CREATE TABLE IF NOT EXISTS etims_sync_state (
    environment text NOT NULL,
    kind        text NOT NULL,    -- code_list | item_classes
    last_req_dt text NOT NULL,    -- YYYYMMDDhhmmss, as KRA takes it
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, kind)
);

-- The tenant's items (saveItem); item_code is unique per tenant and environment.
CREATE TABLE IF NOT EXISTS etims_items (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    environment     text NOT NULL,
    bhf_id          text NOT NULL,
    item_code       text NOT NULL,
    name            text NOT NULL,
    item_class_code text NOT NULL,
    item_type       text NOT NULL,
    origin          text NOT NULL,
    pkg_unit        text NOT NULL,
    qty_unit        text NOT NULL,
    tax_type        text NOT NULL,
    default_price   numeric(18, 2) NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'registered', 'failed')),
    last_failure    jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, environment, item_code)
);

-- The sequence part of item codes (KE1NTXU0000001), per tenant and environment.
CREATE TABLE IF NOT EXISTS etims_item_sequences (
    tenant_id   uuid NOT NULL,
    environment text NOT NULL,
    last_value  bigint NOT NULL,
    PRIMARY KEY (tenant_id, environment)
);

-- Gateway operators suspend and resume companies (POST /v1/etims/companies/{id}/suspend|resume).
CREATE TABLE IF NOT EXISTS etims_companies (
    tenant_id  uuid PRIMARY KEY,
    suspended  boolean NOT NULL DEFAULT false,
    reason     text,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- etims_tax_rates (written by a class-04 code list sync) is the engine's table: engine/etims_tax_rates.sql.

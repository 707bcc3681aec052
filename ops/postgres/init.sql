-- Run once by the postgres image on first start (docker-compose.yml mounts this file into
-- /docker-entrypoint-initdb.d). The image itself creates the ledgerflow role and database from
-- POSTGRES_USER/POSTGRES_DB; the test database is ours.
CREATE DATABASE ledgerflow_test OWNER ledgerflow;

-- Run once by the postgres image on first start (docker-compose.yml mounts this file into
-- /docker-entrypoint-initdb.d). The image itself creates the ledgerflow role and database from
-- POSTGRES_USER/POSTGRES_DB; the test database is ours.
CREATE DATABASE ledgerflow_test OWNER ledgerflow;
-- The runtime role of the API, relay, projector and workers: it may log in and nothing else;
-- `ledgerflow db migrate` (as ledgerflow, the owner) grants it rights on the engine's rows only.
CREATE ROLE ledgerflow_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
    PASSWORD 'ledgerflow_app';

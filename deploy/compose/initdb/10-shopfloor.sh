#!/bin/sh
# The gateway's database and role, with least privilege (deploy/postgres/README.md). Run by the
# postgres image's entrypoint once, when it initialises an empty data directory, as the
# superuser over the local socket. The password comes from a file (SHOPFLOOR_DB_PASSWORD_FILE,
# a compose secret); psql quotes it (:'pw'), so any character is safe.
set -eu
pw="$(cat "${SHOPFLOOR_DB_PASSWORD_FILE:?}")"
psql -v ON_ERROR_STOP=1 -v pw="$pw" --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
-- A login role that is nothing else: no superuser, no new databases or roles, no replication.
CREATE ROLE shopfloor LOGIN PASSWORD :'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
-- It owns its database, so the gateway's migrations can create tables in schema public
-- (PostgreSQL 15+: public belongs to the database owner, and other roles cannot create there).
CREATE DATABASE shopfloor OWNER shopfloor ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0;
-- Nobody else may connect to it (the superuser still can: backups, maintenance).
REVOKE ALL ON DATABASE shopfloor FROM PUBLIC;
SQL

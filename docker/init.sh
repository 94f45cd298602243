#!/bin/sh
# One-shot set-up of PostgreSQL for clipsql: the `init` service of compose.yaml runs it at
# every `up` (each step is idempotent), and tests/integration/test_docker_init.py runs this
# same file against a real PostgreSQL cluster.
#
#   1. as the superuser (libpq's PGHOST, PGPORT, PGUSER, PGPASSWORD): the owner role
#      CLIPSQL_OWNER (LOGIN with CLIPSQL_OWNER_PASSWORD; NOSUPERUSER, NOCREATEROLE,
#      NOCREATEDB), its database CLIPSQL_DB, and pgvector in it;
#   2. as the owner: clipsql's migrations (`clipsql status` applies them);
#   3. as the superuser: the in-database model's functions (clipsql_native, whose C module
#      docker/Dockerfile.db installs in the server), then the filter role clipsql_filter with
#      CLIPSQL_FILTER_PASSWORD and its grants, the SQL that `clipsql admin sql` prints.
#
# clipsql itself then only ever connects as the owner (and its filters as clipsql_filter).
set -eu

: "${PGHOST:?the database host}" "${PGUSER:?the superuser}" "${PGPASSWORD:?its password}"
: "${CLIPSQL_OWNER:?the owner role}" "${CLIPSQL_DB:?the database}"
: "${CLIPSQL_OWNER_PASSWORD:?the owner role's password}"
: "${CLIPSQL_FILTER_PASSWORD:?the filter role's password}"
PGPORT="${PGPORT:-5432}"
export PGPORT

# The passwords go into database URLs: keep them to characters a URL needs no escape for.
for password in "$CLIPSQL_OWNER_PASSWORD" "$CLIPSQL_FILTER_PASSWORD"; do
    case "$password" in
        *[!A-Za-z0-9._~-]*)
            echo "init: the clipsql passwords may use only letters, digits and . _ ~ - (they" \
                 "go into database URLs); e.g. openssl rand -hex 24" >&2
            exit 2 ;;
    esac
done

echo "init: owner role $CLIPSQL_OWNER and database $CLIPSQL_DB, with pgvector"
psql -X -q -v ON_ERROR_STOP=1 -d "${PGDATABASE:-postgres}" <<'SQL'
\getenv owner CLIPSQL_OWNER
\getenv owner_password CLIPSQL_OWNER_PASSWORD
\getenv db CLIPSQL_DB
SELECT format('CREATE ROLE %I', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD %L',
              :'owner', :'owner_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
\connect :"db"
SET client_min_messages TO warning;
CREATE EXTENSION IF NOT EXISTS vector;
SQL

echo "init: clipsql's migrations, as $CLIPSQL_OWNER"
CLIPSQL_DATABASE_URL="postgresql://$CLIPSQL_OWNER:$CLIPSQL_OWNER_PASSWORD@$PGHOST:$PGPORT/$CLIPSQL_DB"
export CLIPSQL_DATABASE_URL
clipsql status >/dev/null

echo "init: the in-database model (CREATE EXTENSION clipsql_native where the server has it), as $PGUSER"
psql -X -q -v ON_ERROR_STOP=1 -d "$CLIPSQL_DB" <<'SQL'
SELECT 'CREATE EXTENSION IF NOT EXISTS clipsql_native'
 WHERE EXISTS (SELECT FROM pg_available_extensions WHERE name = 'clipsql_native') \gexec
SQL

echo "init: the filter role's password and grants (clipsql admin sql), as $PGUSER"
sql=$(clipsql admin sql --db "$CLIPSQL_DATABASE_URL" --owner "$CLIPSQL_OWNER" \
      --database "$CLIPSQL_DB" --filter-password "$CLIPSQL_FILTER_PASSWORD")
printf '%s\n' "$sql" | psql -X -q -v ON_ERROR_STOP=1 -d "$CLIPSQL_DB"
CLIPSQL_FILTER_DATABASE_URL=$(printf '%s\n' "$sql" | sed -n 's/^-- CLIPSQL_FILTER_DATABASE_URL=//p' | tail -n 1)
export CLIPSQL_FILTER_DATABASE_URL
echo "init: done; filters log in as $(printf '%s' "$CLIPSQL_FILTER_DATABASE_URL" | sed 's#:[^:@/]*@#:***@#')"
clipsql status | grep '^filters:' || true

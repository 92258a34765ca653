#!/usr/bin/env bash
# Debian's PostgreSQL on loopback for the Dagster instance tests: installs it if missing,
# starts the cluster listening on 127.0.0.1 only, creates the user and database, and prints
# the connection URL for DISTILL_TEST_POSTGRES_URL. Safe to run again. Needs root (or sudo).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main"; then
  $SUDO pg_createcluster "$version" main >&2
fi
# Debian's postgresql.conf reads conf.d/: listen on loopback only.
echo "listen_addresses = '127.0.0.1'" | $SUDO tee "/etc/postgresql/$version/main/conf.d/distill-loopback.conf" >/dev/null
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  $SUDO pg_ctlcluster "$version" main start >&2
fi
psql_as_postgres() { $SUDO su postgres -c "psql -p $port -qtAc \"$1\""; }
psql_as_postgres "SELECT 1 FROM pg_roles WHERE rolname='distill'" | grep -q 1 \
  || psql_as_postgres "CREATE ROLE distill LOGIN PASSWORD 'distill'" >&2
psql_as_postgres "SELECT 1 FROM pg_database WHERE datname='distill_test'" | grep -q 1 \
  || psql_as_postgres "CREATE DATABASE distill_test OWNER distill" >&2
echo "postgresql+psycopg2://distill:distill@127.0.0.1:$port/distill_test"

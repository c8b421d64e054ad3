#!/usr/bin/env bash
# Installs (Debian package) and starts a throwaway PostgreSQL server on 127.0.0.1:5432 for the
# multi-worker search test, and prints the storage URL for HWNAS_TEST_POSTGRES.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")
DATA=${PGDATA_DIR:-/tmp/hwnas-pg}
if [ ! -f "$DATA/PG_VERSION" ]; then
  mkdir -p "$DATA"
  chown postgres "$DATA" 2>/dev/null || true
  su postgres -s /bin/sh -c "$BIN/initdb -D $DATA -A trust -U postgres" >&2 2>&1 || "$BIN/initdb" -D "$DATA" -A trust -U postgres >&2
fi
if ! su postgres -s /bin/sh -c "$BIN/pg_ctl -D $DATA status" >/dev/null 2>&1; then
  su postgres -s /bin/sh -c "$BIN/pg_ctl -D $DATA -l $DATA/server.log -o '-c listen_addresses=127.0.0.1 -k /tmp' -w start" >&2
fi
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='hwnas_test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE hwnas_test" >&2
echo "postgresql://postgres@127.0.0.1:5432/hwnas_test"

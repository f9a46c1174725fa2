#!/bin/sh
# Backup hook: writes a plain SQL dump of POSTGRES_DB to stdout (schema and data; objects are
# dropped if they exist before they are made, so pg-restore replaces what is there). It runs
# beside the server, in the same network namespace and image, as any uid: it connects to
# 127.0.0.1:$PGPORT as POSTGRES_USER with POSTGRES_PASSWORD (or PGPASSWORD).
set -eu
. /usr/local/lib/onionpod-postgres/common.sh
use_nss_wrapper
exec "$PGBIN/pg_dump" -h "${PGHOST:-127.0.0.1}" -p "$PGPORT" -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
  --clean --if-exists --no-password "$@"

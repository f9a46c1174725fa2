#!/bin/sh
# Restore hook: reads a dump written by pg-dump on stdin and applies it to POSTGRES_DB in one
# transaction (all or nothing), as pg-dump's connection does.
set -eu
. /usr/local/lib/onionpod-postgres/common.sh
use_nss_wrapper
exec "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 --single-transaction -h "${PGHOST:-127.0.0.1}" -p "$PGPORT" \
  -U "$POSTGRES_USER" -d "$POSTGRES_DB" --no-password -f - "$@"

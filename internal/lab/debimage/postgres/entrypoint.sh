#!/bin/sh
# PostgreSQL 15 (Debian's) for onionpod: runs as whatever unprivileged uid it is given, in a
# read-only root, with its data in the volume at $PGDATA's parent (initialised when empty),
# listening on 127.0.0.1 only (the pod's own network namespace) and on a unix socket in /tmp.
#
# Environment: POSTGRES_USER (superuser, default postgres), POSTGRES_PASSWORD (set: TCP clients
# need it, scram-sha-256; unset: trust), POSTGRES_DB (created at init, default POSTGRES_USER),
# PGDATA, PGPORT (5432), POSTGRES_LISTEN (127.0.0.1), POSTGRES_SOCKET_DIR (/tmp).
# Arguments are passed to postgres (e.g. -c shared_buffers=64MB).
set -eu
. /usr/local/lib/onionpod-postgres/common.sh
use_nss_wrapper

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres: initialising $PGDATA" >&2
  auth=trust
  pwfile=
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    auth=scram-sha-256
    pwfile=$nss/pwfile
    (umask 077 && printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile")
  fi
  "$PGBIN/initdb" --username="$POSTGRES_USER" ${pwfile:+"--pwfile=$pwfile"} \
    --auth-local=trust --auth-host="$auth" --encoding=UTF8 --locale=C.UTF-8 --no-instructions >&2
  [ -z "$pwfile" ] || rm -f "$pwfile"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\";" | "$PGBIN/postgres" --single -D "$PGDATA" postgres >/dev/null
  fi
fi

exec "$PGBIN/postgres" -D "$PGDATA" -p "$PGPORT" \
  -c listen_addresses="$POSTGRES_LISTEN" -c unix_socket_directories="$POSTGRES_SOCKET_DIR" "$@"

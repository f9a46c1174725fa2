# Sourced by the image's entrypoint and hooks (/usr/local/lib/onionpod-postgres/common.sh).
# Defaults, checks, and a user database entry for whatever uid runs us.

PGBIN=/usr/lib/postgresql/15/bin
: "${PGDATA:=/var/lib/postgresql/data}"
: "${PGPORT:=5432}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_LISTEN:=127.0.0.1}"
: "${POSTGRES_SOCKET_DIR:=/tmp}"
export PGDATA PGPORT

die() {
  echo "postgres: $*" >&2
  exit 1
}

# Names go into SQL and file names: keep them plain.
for name in "$POSTGRES_USER" "$POSTGRES_DB"; do
  case $name in
  "" | *[!A-Za-z0-9_]*) die "POSTGRES_USER and POSTGRES_DB take letters, digits and '_' only" ;;
  esac
done
case $PGPORT in
"" | *[!0-9]*) die "PGPORT must be a number" ;;
esac

# initdb, postgres and libpq look the running uid up in the user database. A systemd dynamic user
# has no entry in the image's /etc/passwd (nss-systemd answers on the host, not in this root), nor
# has an arbitrary --user of podman or docker. nss_wrapper answers from files we write in a
# writable directory (the unit's private /tmp).
use_nss_wrapper() {
  uid=$(id -u)
  gid=$(id -g)
  [ "$uid" != 0 ] || die "refusing to run as root"
  nss=$(mktemp -d "${TMPDIR:-/tmp}/onionpod-postgres.XXXXXX") || die "no writable TMPDIR (${TMPDIR:-/tmp})"
  printf 'postgres:x:%s:%s:PostgreSQL:%s:/usr/sbin/nologin\n' "$uid" "$gid" "${PGDATA%/*}" >"$nss/passwd"
  printf 'postgres:x:%s:\n' "$gid" >"$nss/group"
  export LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD="$nss/passwd" NSS_WRAPPER_GROUP="$nss/group"
}

# The password the hooks connect with (PGPASSWORD wins).
if [ -z "${PGPASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD:-}" ]; then
  PGPASSWORD=$POSTGRES_PASSWORD
  export PGPASSWORD
fi

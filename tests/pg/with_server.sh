#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL server (docs/data.md "PostgreSQL manifest"):
#   tests/pg/with_server.sh CMD [ARGS...]
# initdb's a cluster in a fresh temp folder, starts it with pg_ctl listening only on a Unix socket in
# that folder (no TCP port, so parallel runs never collide), runs CMD with OBORO_TEST_PG set to a libpq
# connection string for it (user oboro, database postgres, trust auth), then stops the server and
# removes the folder, also when CMD fails or is interrupted. CMD's exit status is returned.
#
# Also created, for the bad-input tests: user oboro_pw with password "right" (scram-sha-256), passed as
# OBORO_TEST_PG_PW_USER / OBORO_TEST_PG_PW_PASS.
#
# PostgreSQL refuses to run as root (CI runs as root): as root the server runs as an unprivileged user,
# $OBORO_PG_USER or Debian's `postgres` system user, or `oboro-pg`, created (no login, no home) when
# neither exists. OBORO_PG_FSYNC=on keeps fsync on (benchmarks); the default off suits tests.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  echo "$0: PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql" >&2
  exit 2
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/oboro-pg.XXXXXX")
chmod 755 "$dir"
as_server() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  user=${OBORO_PG_USER:-}
  if [ -z "$user" ]; then
    if id postgres >/dev/null 2>&1; then user=postgres; else user=oboro-pg; fi
  fi
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  fi
  chown "$user" "$dir"
  as_server() { runuser -u "$user" -- "$@"; }
fi
cleanup() {
  as_server "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
as_server "$PGBIN/initdb" -D "$dir/data" -U oboro --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
  { cat "$dir/initdb.log" >&2; exit 1; }
cat >"$dir/data/pg_hba.conf" <<HBA
local all oboro_pw scram-sha-256
local all all trust
HBA
as_server "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=${OBORO_PG_FSYNC:-off} -c max_connections=100" \
  start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
export OBORO_TEST_PG="host=$dir user=oboro dbname=postgres"
psql "$OBORO_TEST_PG" -qX -v ON_ERROR_STOP=1 -c "CREATE ROLE oboro_pw LOGIN PASSWORD 'right'" >/dev/null
export OBORO_TEST_PG_PW_USER=oboro_pw OBORO_TEST_PG_PW_PASS=right
echo "with_server: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on $dir (OBORO_TEST_PG=\"$OBORO_TEST_PG\")" >&2
set +e
"$@"
rc=$?
set -e
exit $rc

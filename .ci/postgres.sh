#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the multi-worker storage tests.
#
#   eval "$(.ci/postgres.sh start)"   # prints `export PNEUMO_TEST_POSTGRES_URL=...`
#   .ci/postgres.sh stop
#
# The cluster lives in $PNEUMO_PG_DIR (default /tmp/pneumo-search-pg), listens on loopback only
# (port $PNEUMO_PG_PORT, default 54329) and holds one role+database, pneumo/pneumo. As root the
# server runs as the `postgres` user (PostgreSQL refuses to run as root). Uses the Debian
# `postgresql` package's binaries (/usr/lib/postgresql/<version>/bin).
set -euo pipefail

DIR="${PNEUMO_PG_DIR:-/tmp/pneumo-search-pg}"
PORT="${PNEUMO_PG_PORT:-54329}"
URL="postgresql://pneumo:pneumo@127.0.0.1:${PORT}/pneumo"

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    echo "postgres.sh: no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2
    exit 1
  fi
  echo "$d"
}

as_owner() {  # run a command as the cluster's owner: `postgres` when we are root, else ourselves
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local bin
  bin=$(bindir)
  if [ ! -s "$DIR/data/PG_VERSION" ]; then
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
    as_owner "$bin/initdb" -D "$DIR/data" -U postgres -A trust --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 \
      || { cat "$DIR/initdb.log" >&2; exit 1; }
  fi
  if ! as_owner "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    # loopback only; the Unix socket goes in our own folder, not /var/run/postgresql
    as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c max_connections=200" start >/dev/null \
      || { cat "$DIR/server.log" >&2; exit 1; }
  fi
  local psql=("$bin/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
  if [ "$("${psql[@]}" -c "select 1 from pg_roles where rolname='pneumo'")" != "1" ]; then
    "${psql[@]}" -c "create role pneumo login password 'pneumo'" >/dev/null
  fi
  if [ "$("${psql[@]}" -c "select 1 from pg_database where datname='pneumo'")" != "1" ]; then
    "${psql[@]}" -c "create database pneumo owner pneumo" >/dev/null
  fi
  echo "export PNEUMO_TEST_POSTGRES_URL=$URL"
}

stop() {
  local bin
  bin=$(bindir)
  if [ -d "$DIR/data" ]; then
    as_owner "$bin/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

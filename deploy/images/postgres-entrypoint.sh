#!/bin/bash
# Starts PostgreSQL as the upstream postgres image does, for the settings compose uses:
# on an empty PGDATA, initdb with POSTGRES_USER as the superuser and the password read from
# POSTGRES_PASSWORD_FILE, then POSTGRES_DB; every network client must give that password (SCRAM).
# Runs as root only to prepare the folders, then as postgres.
set -euo pipefail

bin=$(echo /usr/lib/postgresql/*/bin)
data=${PGDATA:?PGDATA must be set}
user=${POSTGRES_USER:?POSTGRES_USER must be set}
database=${POSTGRES_DB:-$user}
as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups)

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$data" /run/postgresql
  chown postgres:postgres "$data" /run/postgresql
  chmod 700 "$data"
fi

if [ ! -s "$data/PG_VERSION" ]; then
  password_file=${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE must name the password file}
  [ -s "$password_file" ] || { echo "postgres-entrypoint: $password_file is empty or missing" >&2; exit 2; }
  # initdb reads the password from a file only postgres may read; the newline is not part of it.
  pwfile=$(mktemp)
  tr -d '\n' <"$password_file" >"$pwfile"
  chown postgres:postgres "$pwfile"
  chmod 600 "$pwfile"
  "${as_postgres[@]}" "$bin/initdb" --pgdata="$data" --username="$user" --pwfile="$pwfile" \
    --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
  if [ "$database" != postgres ]; then
    # Single-user mode: the database exists before anything can connect.
    printf 'CREATE DATABASE "%s" OWNER "%s";\n' "$database" "$user" \
      | "${as_postgres[@]}" "$bin/postgres" --single -j -D "$data" postgres >/dev/null
  fi
  echo "postgres-entrypoint: initialised $data with database $database"
fi

exec "${as_postgres[@]}" "$bin/postgres" -D "$data" -c listen_addresses='*' "$@"

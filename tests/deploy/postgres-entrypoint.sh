#!/bin/sh
# Entrypoint of the postgres:16 stand-in (tests/deploy/standins.sh): Debian's PostgreSQL behind the part of
# the official image's docker-entrypoint.sh that docker-compose.yml relies on. First start (empty PGDATA):
# initdb as POSTGRES_USER with the password read from POSTGRES_PASSWORD_FILE (or POSTGRES_PASSWORD) and
# POSTGRES_INITDB_ARGS, `listen_addresses = '*'` and a `host all all all scram-sha-256` line, as the
# official image writes them. Later starts use the data as they find it. Not implemented (not used by the
# compose file): POSTGRES_DB other than postgres, /docker-entrypoint-initdb.d scripts, POSTGRES_HOST_AUTH_METHOD.
set -eu

if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        password="$(cat "$POSTGRES_PASSWORD_FILE")"
    else
        password="${POSTGRES_PASSWORD:-}"
    fi
    if [ -z "$password" ]; then
        echo "error: database is uninitialized and the superuser password is not specified" >&2
        echo "       (POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD)" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "$password" >"$pwfile"
    unset password
    # POSTGRES_INITDB_ARGS is a list of words, as in the official image
    # shellcheck disable=SC2086
    initdb --username="${POSTGRES_USER:-postgres}" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-}
    rm -f "$pwfile"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"

#!/bin/sh
# Local stand-ins for the base images of Dockerfile and docker-compose.yml, built from Debian packages
# with mmdebstrap + `docker import`, for machines that reach no image registry (test support: the
# production Dockerfile and compose file are unchanged and use the real images elsewhere).
#
#   python:3.11-slim-bookworm  Debian bookworm's python3 (3.11) with pip, `python` / `pip` commands, the
#                              host's CA bundle and a pip.conf that reaches this machine's local package
#                              folders through tests/deploy/pip_mirror.py on 127.0.0.1 during a build
#   postgres:16                Debian bookworm's PostgreSQL 15 behind tests/deploy/postgres-entrypoint.sh
#
# An image of that name that is not a stand-in (a real one, pulled) is never replaced; a stand-in is
# rebuilt only when its inputs (this script, the entrypoint, the pip.conf) changed. Environment:
# SENSORIUM_PIP_MIRROR_PORT (default 47113), PYTHON (the Python that runs pip_mirror.py).
# the hooks' "$1" is mmdebstrap's, expanded when it runs them:
# shellcheck disable=SC2016
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
port="${SENSORIUM_PIP_MIRROR_PORT:-47113}"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" "$here/pip_mirror.py" conf "$port" >"$work/pip.conf"

# stamp NAME INPUTS...: a hash of what the stand-in is built from
stamp() {
    name="$1"
    shift
    cat "$here/standins.sh" "$@" | sha256sum | cut -c1-16
}

# needed NAME STAMP: whether NAME must be (re)built
needed() {
    label="$(docker image inspect --format '{{ index .Config.Labels "org.sensorium.standin" }}' "$1" 2>/dev/null)" \
        || return 0 # no such image
    case "$label" in
    "") echo "$1: a real image is here, kept" >&2; return 1 ;;
    "$2") echo "$1: stand-in up to date" >&2; return 1 ;;
    *) return 0 ;;
    esac
}

# build NAME STAMP PACKAGES CHANGES... : mmdebstrap a bookworm minbase with PACKAGES, import it as NAME
build() {
    name="$1" stamp_value="$2" packages="$3"
    shift 3
    started="$(date +%s)"
    case "$name" in
    python*) # pip may install into the system Python (PEP 668's marker removed), as in the real image
        hook1='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED'
        hook2="copy-in $work/pip.conf /etc" ;;
    postgres*)
        hook1="copy-in $here/postgres-entrypoint.sh /usr/local/bin"
        hook2='chroot "$1" install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data' ;;
    esac
    mmdebstrap --quiet --variant=minbase --include="$packages" \
        --aptopt='APT::Install-Recommends "false"' \
        --essential-hook='mkdir -p "$1/etc/postgresql-common" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.conf"' \
        --customize-hook='copy-in /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs' \
        --customize-hook="$hook1" --customize-hook="$hook2" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$work/rootfs.tar"
    docker import "$@" --change "LABEL org.sensorium.standin=$stamp_value" "$work/rootfs.tar" "$name" >/dev/null
    case "$name" in
    postgres*) # `docker import` takes no STOPSIGNAL: the official image's (fast shutdown) in a build
        printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$name" | docker build --quiet --tag "$name" - >/dev/null ;;
    esac
    rm -f "$work/rootfs.tar"
    docker image prune -f --filter label=org.sensorium.standin >/dev/null # the stand-in it replaced
    echo "$name: stand-in built in $(($(date +%s) - started)) s" >&2
}

python_stamp="$(stamp python "$work/pip.conf")"
if needed python:3.11-slim-bookworm "$python_stamp"; then
    build python:3.11-slim-bookworm "$python_stamp" \
        python3,python3-pip,python3-venv,python-is-python3,passwd,ca-certificates \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]'
fi

postgres_stamp="$(stamp postgres "$here/postgres-entrypoint.sh")"
if needed postgres:16 "$postgres_stamp"; then
    build postgres:16 "$postgres_stamp" postgresql-15,postgresql-client-15 \
        --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PGDATA=/var/lib/postgresql/data' \
        --change 'VOLUME /var/lib/postgresql/data' \
        --change 'ENTRYPOINT ["postgres-entrypoint.sh"]' \
        --change 'EXPOSE 5432' \
        --change 'CMD ["postgres"]'
fi

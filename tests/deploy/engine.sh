#!/bin/sh
# A Docker engine and the Compose v2 CLI plugin for the deploy check (make deploy-check), as root:
#
#   tests/deploy/engine.sh install   # install what is missing: docker.io and mmdebstrap (Debian), the
#                                    # Compose v2 plugin (Debian trixie's docker-compose package)
#   tests/deploy/engine.sh           # install, then start dockerd unless an engine answers already
#   tests/deploy/engine.sh stop      # stop the dockerd this script started (nothing else)
#
# Exit 77 (and one line saying why) where no engine can be had: not root and none running, no apt-get.
#
# Compose v2: bookworm's docker-compose package is Compose v1 (1.29), which rejects docker-compose.yml
# (`name:`, `depends_on.required`). trixie's (2.26) carries the v2 CLI plugin, a static binary: it is
# fetched with `apt-get download` through a private apt state (a trixie source list of its own under
# /var/lib/sensorium-deploy-check/apt), so the machine's own sources and pins never see trixie and no
# trixie package is installed; the plugin goes where the Docker CLI looks for plugins.
#
# dockerd is started without a bridge, iptables rules or masquerading (`--bridge=none --iptables=false
# --ip-masq=false`): the deploy check's containers use the host network and all its traffic stays on
# 127.0.0.1. Its log: /var/log/sensorium-dockerd.log.
set -eu
state=/var/lib/sensorium-deploy-check
pidfile=/run/sensorium-dockerd.pid
plugins=/usr/libexec/docker/cli-plugins

skip() {
    echo "no Docker engine: $*" >&2
    exit 77
}

compose_v2() {
    docker compose version 2>/dev/null | grep -q 'version v\{0,1\}2\.'
}

install() {
    missing=""
    command -v dockerd >/dev/null || missing="$missing docker.io"
    command -v mmdebstrap >/dev/null || missing="$missing mmdebstrap"
    if [ -n "$missing" ]; then
        [ "$(id -u)" = 0 ] || skip "not root, cannot install$missing"
        command -v apt-get >/dev/null || skip "no apt-get to install$missing"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    if ! compose_v2; then
        [ "$(id -u)" = 0 ] || skip "not root, cannot install the Compose v2 plugin"
        apt="$state/apt"
        mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
            >"$apt/sources.list"
        set -- -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
            -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root
        apt-get "$@" update -qq
        rm -f "$apt"/deb/*.deb
        (cd "$apt/deb" && apt-get "$@" download -qq docker-compose)
        mkdir -p "$plugins"
        dpkg-deb --fsys-tarfile "$apt"/deb/docker-compose_*.deb \
            | tar -x -O ./usr/libexec/docker/cli-plugins/docker-compose >"$plugins/docker-compose.new"
        chmod 755 "$plugins/docker-compose.new"
        mv "$plugins/docker-compose.new" "$plugins/docker-compose"
        compose_v2 || skip "the Compose plugin from trixie does not run: $(docker compose version 2>&1)"
    fi
}

start() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || skip "none answers and only root can start dockerd"
    command -v dockerd >/dev/null || skip "dockerd is not installed"
    nohup dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/sensorium-dockerd.log 2>&1 &
    echo $! >"$pidfile"
    tries=0
    until docker info >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 60 ] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            tail -5 /var/log/sensorium-dockerd.log >&2
            skip "dockerd did not start (log above)"
        fi
        sleep 0.5
    done
    echo "started dockerd (pid $(cat "$pidfile"), no bridge network)" >&2
}

stop() {
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        tries=0
        while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 60 ]; do
            tries=$((tries + 1))
            sleep 0.5
        done
    fi
    rm -f "$pidfile"
}

case "${1:-start}" in
install) install ;;
start)
    install
    start
    ;;
stop) stop ;;
*)
    echo "usage: $0 [install|start|stop]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Installs what the `server` tests need (PostgreSQL's initdb/pg_ctl) so that they run in CI
# instead of failing there (tests/servers.py fails, not skips, a missing service when CI is set).
# The tests start and stop their own throwaway cluster; nothing here starts a server.
set -euo pipefail

find_initdb() {
    # Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<major>/bin.
    local bindir
    if command -v initdb >/dev/null 2>&1; then command -v initdb; return; fi
    if command -v pg_config >/dev/null 2>&1; then
        bindir=$(pg_config --bindir 2>/dev/null || true)
        if [ -x "$bindir/initdb" ]; then echo "$bindir/initdb"; return; fi
    fi
    for bindir in /usr/lib/postgresql/*/bin; do
        if [ -x "$bindir/initdb" ]; then echo "$bindir/initdb"; return; fi
    done
    return 1
}

if initdb=$(find_initdb); then
    echo "services: PostgreSQL already installed ($initdb), nothing to do"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    # Not root: no package installs here; the server tests will say what is missing.
    echo "services: PostgreSQL not found and not running as root; not installing it" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "services: installing PostgreSQL with apt-get"
apt-get update -qq
# postgresql-common first, told not to create (and start) a default cluster on port 5432
# when the server package arrives: the tests make their own.
apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
if ! initdb=$(find_initdb); then
    echo "services: apt-get installed postgresql, yet no initdb was found" >&2
    exit 1
fi
echo "services: installed PostgreSQL ($initdb)"

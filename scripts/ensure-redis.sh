#!/usr/bin/env bash
# The Redis tests start their own redis-server on a free localhost port: make sure the binary
# exists, installing Debian's package when it is missing and we may (root with apt-get).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian package) for the Redis tests..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
    exit 0
fi
echo "redis-server is missing: install it (e.g. 'sudo apt-get install redis-server')" >&2
exit 1

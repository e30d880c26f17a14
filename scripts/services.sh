#!/usr/bin/env bash
# Make sure the PostgreSQL server the tests use is up (machines here start it at boot; CI may
# find it stopped). The moto S3 server is started by the test fixtures themselves.
set -euo pipefail
url="${OCIMIRROR_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
if pg_isready -q -d "$url" 2>/dev/null; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
fi
for _ in $(seq 1 30); do
    pg_isready -q -d "$url" 2>/dev/null && exit 0
    sleep 1
done
echo "PostgreSQL is not answering at $url" >&2
exit 1

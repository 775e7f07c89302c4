#!/usr/bin/env bash
# After the test run: no daemon log line, at any level, holds a token or a test secret.
# v1 tokens start every part with base64url of '{"' ("eyJ"); legacy tokens are long
# base64 runs; the secrets are the tests' own.
set -euo pipefail
dir=${1:-target/tmp/daemon-logs}
[ -d "$dir" ] || { echo "check-logs: no logs in $dir (run the tests first)"; exit 1; }
files=$(ls "$dir"/*.log 2>/dev/null | wc -l)
lines=$(cat "$dir"/*.log | wc -l)
bad=0
for pattern in 'eyJ' 'test-secret-for-notifyd' 'opensource' '[A-Za-z0-9+/]{60,}={0,2}'; do
    if grep -E -n -- "$pattern" "$dir"/*.log | grep -v 'DEVELOPMENT MODE' >/dev/null; then
        echo "check-logs: FOUND /$pattern/ in:"; grep -E -n -- "$pattern" "$dir"/*.log | grep -v 'DEVELOPMENT MODE' | head -5
        bad=1
    fi
done
echo "check-logs: $files daemon logs, $lines lines, no token or secret: $([ $bad -eq 0 ] && echo yes || echo NO)"
exit $bad

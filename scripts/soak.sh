#!/usr/bin/env bash
# make soak: 10,000 connections with steady traffic and churn for SOAK_SECONDS (default
# 600) against a fresh daemon; server RSS sampled every 10 s must stay within 5 % of
# its value after warm-up, and the stable receivers must get every message. Writes
# target/soak.csv and docs/soak.png.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SOAK_SECONDS:-600}
connections=${SOAK_CONNECTIONS:-10000}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/tsugi-notifyd --url ws://127.0.0.1:2021 --bind 127.0.0.1 --proxyport "$port" \
    --secret soak-secret --max-connections 19900 --metrics-bind off --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 0.5
report=$(target/release/notify-bench soak --addr "127.0.0.1:$port" --secret soak-secret --server-pid "$pid" \
    --connections "$connections" --seconds "$seconds" --sources 127.0.0.6,127.0.0.7 --csv target/soak.csv)
echo "$report"
mkdir -p docs
/usr/bin/python3 scripts/plot-soak.py target/soak.csv docs/soak.png
echo "soak: plot in docs/soak.png"
python3 - "$report" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
ok = r["loss"] == 0 and r["rss_growth_pct"] < 5
print(f"soak: loss {r['loss']}, RSS growth after warm-up {r['rss_growth_pct']:.2f}% -> {'ok' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
PY

#!/usr/bin/env bash
# Bulk evaluation over HTTP of the same flags for one subject: Tollgate's OFREP
# `POST /ofrep/v1/evaluate/flags` against unleash-edge's `POST /api/frontend`, both
# in one process each on loopback, loaded by the same wrk with the same connections.
#
# Both read the same Unleash features file (bench/features.json by default): Tollgate
# through `tollgate gates import --unleash`, unleash-edge through `offline
# --bootstrap-file`. Prints every run and the medians; paste them into
# docs/BENCHMARKS.md.
#
# Environment: UNLEASH_EDGE (path to unleash-edge; default: the one on PATH),
# TOLLGATE_BIN (default: target/release/tollgate, built if missing), FEATURES,
# RUNS (3), DURATION (10s), CONNECTIONS (64), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
FEATURES="${FEATURES:-bench/features.json}"
EDGE="${UNLEASH_EDGE:-$(command -v unleash-edge || true)}"

if [ -z "$EDGE" ] || [ ! -x "$EDGE" ]; then
  cat >&2 <<'EOF'
unleash-edge was not found. Install it with

    cargo install unleash-edge --locked --root /opt/edge

(--locked matters: without it cargo picks an unleash-types release that the pinned
unleash-yggdrasil does not compile against), then put /opt/edge/bin on PATH or run
this script with UNLEASH_EDGE=/opt/edge/bin/unleash-edge.
EOF
  exit 1
fi
if ! command -v wrk >/dev/null; then
  echo "wrk was not found: apt-get install wrk" >&2
  exit 1
fi
TOLLGATE="${TOLLGATE_BIN:-target/release/tollgate}"
if [ ! -x "$TOLLGATE" ]; then
  echo "building $TOLLGATE (cargo build --release -p tollgate)" >&2
  cargo build --release --quiet -p tollgate
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# --- Tollgate -----------------------------------------------------------------
ADMIN="tg_bench_admin_$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
TOLLGATE_BOOTSTRAP_TOKEN="$ADMIN" TOLLGATE_LOG=warn \
  "$TOLLGATE" serve --data "$tmp/data" --listen 127.0.0.1:0 >"$tmp/tollgate.out" 2>"$tmp/tollgate.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^listening on ' "$tmp/tollgate.out" 2>/dev/null && break; sleep 0.1; done
TG="$(sed -n 's/^listening on //p' "$tmp/tollgate.out")"
[ -n "$TG" ] || { echo "tollgate did not start:" >&2; cat "$tmp/tollgate.err" >&2; exit 1; }
"$TOLLGATE" gates import --unleash "$FEATURES" --url "$TG" --token "$ADMIN" >/dev/null
PRODUCT_TOKEN="$(curl -fsS -X POST "$TG/v1/tokens" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' -d '{"role":"product","name":"bench"}' | json_field '["token"]')"

# --- unleash-edge ---------------------------------------------------------------
EPORT="$(free_port)"
FRONTEND_TOKEN='*:development.benchfrontendtoken'
"$EDGE" --port "$EPORT" --interface 127.0.0.1 offline --bootstrap-file "$FEATURES" \
  --frontend-tokens "$FRONTEND_TOKEN" --client-tokens '*:development.benchclienttoken' \
  >"$tmp/edge.out" 2>&1 &
pids+=($!)
EDGE_URL="http://127.0.0.1:$EPORT"

# --- the same subject, both ways ---------------------------------------------
OFREP_BODY='{"context":{"targetingKey":"user-7","plan":"pro","version":"1.3.0"}}'
EDGE_BODY='{"userId":"user-7","properties":{"plan":"pro","version":"1.3.0"}}'
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null -X POST "$EDGE_URL/api/frontend" -H "Authorization: $FRONTEND_TOKEN" \
    -H 'Content-Type: application/json' -d "$EDGE_BODY" 2>/dev/null && break
  sleep 0.1
done
tg_on="$(curl -fsS -X POST "$TG/ofrep/v1/evaluate/flags" -H "Authorization: Bearer $PRODUCT_TOKEN" \
  -H 'Content-Type: application/json' -d "$OFREP_BODY" \
  | python3 -c 'import json,sys; f=json.load(sys.stdin)["flags"]; print(len(f), sorted(x["key"] for x in f if x["metadata"]["enabled"]))')"
edge_on="$(curl -fsS -X POST "$EDGE_URL/api/frontend" -H "Authorization: $FRONTEND_TOKEN" \
  -H 'Content-Type: application/json' -d "$EDGE_BODY" \
  | python3 -c 'import json,sys; t=json.load(sys.stdin)["toggles"]; print(sorted(x["name"] for x in t if x["enabled"]))')"
echo "tollgate: ${tg_on%% *} flags evaluated; on: ${tg_on#* }"
echo "edge:     on: $edge_on"
if [ "${tg_on#* }" != "$edge_on" ]; then
  echo "the two disagree on which flags are on for this subject" >&2
  exit 1
fi

lua() { # file header body
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "$2"
wrk.body = '$3'
EOF
}
lua "$tmp/tollgate.lua" "Bearer $PRODUCT_TOKEN" "$OFREP_BODY"
lua "$tmp/edge.lua" "$FRONTEND_TOKEN" "$EDGE_BODY"

# Prints "requests_per_second p99_ms" for one wrk run.
load() { # script url
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$1" "$2" | python3 -c '
import re, sys
out = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
v, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
p99 = float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if errors:
    sys.exit(f"{errors.group(1)} failed responses:\n{out}")
print(f"{rps:.0f} {p99:.3f}")'
}

echo "warming up"
DURATION=2s load "$tmp/tollgate.lua" "$TG/ofrep/v1/evaluate/flags" >/dev/null
DURATION=2s load "$tmp/edge.lua" "$EDGE_URL/api/frontend" >/dev/null

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $RUNS runs, alternating order"
: >"$tmp/results"
for i in $(seq 1 "$RUNS"); do
  if [ $((i % 2)) -eq 1 ]; then order="tollgate edge"; else order="edge tollgate"; fi
  for who in $order; do
    if [ "$who" = tollgate ]; then r="$(load "$tmp/tollgate.lua" "$TG/ofrep/v1/evaluate/flags")"
    else r="$(load "$tmp/edge.lua" "$EDGE_URL/api/frontend")"; fi
    echo "run $i $who: $r (req/s, p99 ms)"
    echo "$who $r" >>"$tmp/results"
  done
done

python3 - "$tmp/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(who, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == who)
t_rps, e_rps = med("tollgate", 1), med("edge", 1)
t_p99, e_p99 = med("tollgate", 2), med("edge", 2)
print()
print("| server | median req/s | median p99 |")
print("|---|---|---|")
print(f"| Tollgate OFREP bulk | {t_rps:,.0f} | {t_p99:.2f} ms |")
print(f"| unleash-edge /api/frontend | {e_rps:,.0f} | {e_p99:.2f} ms |")
print(f"ratio (Tollgate / edge): {t_rps / e_rps:.2f}x requests/s; p99 {t_p99:.2f} ms vs {e_p99:.2f} ms")
EOF

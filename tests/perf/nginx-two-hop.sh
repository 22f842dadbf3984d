#!/usr/bin/env bash
# The nginx two-hop mTLS comparison of the performance issue, run alternately with
# `wijkpoort bench` on the same machine, printing each pair's ratio.
#
#   tests/perf/nginx-two-hop.sh [RUNS] [-- BENCH ARGS…]
#
# nginx (one worker) plays both gateways with none of wijkpoort's work: the load
# generator posts ~2 KB of JSON over keep-alive HTTP to hop A (the practice's local API
# in wijkpoort's bench), hop A proxies it over mutually authenticated TLS 1.3 with
# keep-alive to hop B (the wijkteam), and hop B answers 202. No durability, no checks.
# wijkpoort's bench does the same two hops with everything on and durable at both ends.
#
# Needs: nginx (Debian: `apt-get install nginx-light`), oha (`cargo install oha --locked`),
# and the release build (`cargo build --release`). Certificates come from
# `wijkpoort certs dev` (ECDSA P-256; set SHAPE=uzi for the RSA-4096 UZI shape).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then RUNS=$1; shift; fi
[ "${1:-}" = "--" ] && shift
BENCH_ARGS=("$@")
SHAPE=${SHAPE:-ecdsa}
CONNECTIONS=${CONNECTIONS:-64}
REQUESTS=${REQUESTS:-20000}
BIN=${WIJKPOORT:-target/release/wijkpoort}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}

for tool in "$BIN" "$NGINX" "$OHA"; do
    if [ ! -x "$tool" ]; then
        echo "nginx-two-hop: $tool not found (see the header of this script)" >&2
        exit 2
    fi
done

WORK=$(mktemp -d)
trap 'kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN" certs dev --out "$WORK/pki" --shape "$SHAPE" >/dev/null
python3 - "$WORK/body.json" <<'PY'
import json, sys
text = "Het kind heeft hulp nodig bij het slapen en op school. " * 36
body = {"type": "referral", "to": "wijkteam", "subject": {"bsn": "999990019", "name": "Test Kind"},
        "payload": {"request_for_help": text[:2000]}}
open(sys.argv[1], "w").write(json.dumps(body))
PY

PORT_A=${PORT_A:-18480}
PORT_B=${PORT_B:-18443}
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    keepalive_requests 1000000;
    upstream hop_b {
        server 127.0.0.1:$PORT_B;
        keepalive $CONNECTIONS;
    }
    # hop A: the practice side; plain HTTP in, mutual TLS out.
    server {
        listen 127.0.0.1:$PORT_A;
        client_body_buffer_size 64k;
        location / {
            proxy_pass https://hop_b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate $WORK/pki/practice.pem;
            proxy_ssl_certificate_key $WORK/pki/practice.key;
            proxy_ssl_trusted_certificate $WORK/pki/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name off;
            proxy_ssl_session_reuse on;
        }
    }
    # hop B: the wijkteam side; mutual TLS in, answers 202.
    server {
        listen 127.0.0.1:$PORT_B ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate $WORK/pki/wijkteam.pem;
        ssl_certificate_key $WORK/pki/wijkteam.key;
        ssl_client_certificate $WORK/pki/ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 4;
        client_body_buffer_size 64k;
        location / {
            return 202 '{"status":"accepted"}';
        }
    }
}
CONF
"$NGINX" -t -q -p "$WORK/nginx" -c "$WORK/nginx.conf"

nginx_run() {
    "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf"
    for _ in $(seq 50); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.1; done
    "$OHA" --no-tui --output-format json -n "$REQUESTS" -c "$CONNECTIONS" -m POST \
        -H 'content-type: application/json' -D "$WORK/body.json" \
        "http://127.0.0.1:$PORT_A/v1/messages" > "$WORK/oha.json"
    kill "$(cat "$WORK/nginx.pid")"
    for _ in $(seq 50); do [ -e "$WORK/nginx.pid" ] || break; sleep 0.1; done
    python3 - "$WORK/oha.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]
codes = r.get("statusCodeDistribution", {})
p99 = r["latencyPercentiles"]["p99"] * 1000
print(f"{s['requestsPerSec']:.0f} {p99:.2f} {codes.get('202', 0)}")
PY
}

wijkpoort_run() {
    "$BIN" bench "${BENCH_ARGS[@]}" > "$WORK/bench.txt" 2>&1 || { cat "$WORK/bench.txt" >&2; exit 1; }
    awk '/throughput, end to end/ {t=$5} /submit → accepted/ {if (!a) {a=$11}} END {print t, a}' "$WORK/bench.txt"
}

printf '%-4s %14s %10s %16s %10s %7s\n' run "nginx req/s" "p99 ms" "wijkpoort msg/s" "p99 ms" ratio
for i in $(seq "$RUNS"); do
    read -r n_rate n_p99 n_ok < <(nginx_run)
    if [ "$n_ok" != "$REQUESTS" ]; then
        echo "nginx-two-hop: only $n_ok of $REQUESTS requests answered 202 (see $WORK/nginx/logs/error.log)" >&2
        cat "$WORK/nginx/logs/error.log" >&2
        exit 1
    fi
    read -r w_rate w_p99 < <(wijkpoort_run)
    ratio=$(python3 -c "print(f'{$w_rate / $n_rate:.3f}')")
    printf '%-4s %14s %10s %16s %10s %7s\n' "$i" "$n_rate" "$n_p99" "$w_rate" "$w_p99" "$ratio"
    cp "$WORK/bench.txt" "${BENCH_LOG_DIR:-/tmp}/wijkpoort-bench-$i.txt" 2>/dev/null || true
done

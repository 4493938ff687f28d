#!/usr/bin/env bash
# benches/run.sh: odoo-edge vs nginx (configured as Odoo's docs recommend),
# side by side in one run, in front of the same mock-odoo nodes.
#
# Scenarios (each run alternates edge, nginx, edge, nginx, ...):
#   get   small GET, wrk --latency
#   post  2 KB JSON-RPC POST (benches/post2k.lua)
#   ws    idle websocket memory (benches/wsidle.rs)
#   static20k  GET a 20 KB static .png (odoo-edge [static] vs nginx root/try_files)
#   staticjs   GET a 200 KB static .js with Accept-Encoding: gzip
#   accel1m    GET /web/content/<id>: the node answers X-Accel-Redirect, the
#              proxy serves the 1 MiB attachment from the filestore
#   bigaccel   one curl of a 1 GiB X-Accel attachment per proxy, sampling the
#              proxy's VmRSS every 100 ms
#   report     small GETs (wrk --latency, timed per request by
#              benches/report.lua) through two 4-worker nodes while node-a is
#              kept busy by 5 s "reports" sent to it directly
#              (benches/reportload.py): nginx's round robin vs the edge's
#              admission control
#   tlsnew     new TLS connections per second, full handshakes, TLS 1.3 and
#              1.2 (benches/tlsconn.py; handshake only, no HTTP request)
#   tlsresume  the same with session resumption (TLS 1.3 tickets, TLS 1.2
#              tickets, TLS 1.2 session IDs)
#   tlsget     the small GET over HTTPS, keep-alive (wrk https://)
#   (TLS: the same ECDSA P-256 certificate for both, generated per run with
#   the openssl CLI into $OUT/tls/; nginx with the docs' SSL parameters)
#
# Every proxy run uses a fresh proxy process (so its peak RSS is its own);
# the mock nodes live for the whole run. Raw outputs, logs and configs go to
# $OUT (default benches/out/<timestamp>/); the tables go to stdout and to
# $OUT/summary.md. Traffic goes to 127.0.0.1 only. Everything started here is
# stopped on exit, error or Ctrl-C. See benches/README.md for the knobs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

# --- knobs (environment) -----------------------------------------------------
DURATION=${DURATION:-10}          # seconds per measured wrk run
WARMUP=${WARMUP:-2}               # seconds of unmeasured wrk load before each run (0: none)
ROUNDS=${ROUNDS:-3}               # rounds per scenario; each round = one edge run + one nginx run
CONNECTIONS=${CONNECTIONS:-32}    # wrk -c
WRK_THREADS=${WRK_THREADS:-1}     # wrk -t
GET_PATH=${GET_PATH:-/web/webclient/version_info}
WS_COUNT=${WS_COUNT:-5000}        # websockets per ws run
WS_BATCH=${WS_BATCH:-200}         # handshakes in flight at once
WS_TIMEOUT=${WS_TIMEOUT:-10}      # seconds per handshake
WS_SETTLE=${WS_SETTLE:-2}         # seconds between "all open" and the RSS reading
WS_ROUNDS=${WS_ROUNDS:-$ROUNDS}
SCENARIOS=${SCENARIOS-"get post ws"} # may be empty (e.g. with PROFILE=1)
PORT_BASE=${PORT_BASE:-18000}     # mocks on +69 +70 +72, edge on +80, nginx on +81
MOCK_WORKERS=${MOCK_WORKERS:-64}  # prefork workers per interactive mock node
EDGE_THREADS=${EDGE_THREADS:-1}   # odoo-edge [runtime] worker_threads
NGINX_WORKERS=${NGINX_WORKERS:-1} # nginx worker_processes
NOFILE=${NOFILE:-65536}           # wanted ulimit -n (capped by the hard limit)
BUILD=${BUILD:-1}                 # 0: use the binaries already in target/release
PROFILE=${PROFILE:-0}             # 1: then profile both proxies under the small GET with perf
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
EDGE_LOG=${EDGE_LOG:-info}        # RUST_LOG for odoo-edge
ACCESS_LOG=${ACCESS_LOG:-off}     # on: both proxies write a combined access log line per request to a file
NGINX_SENDFILE=${NGINX_SENDFILE:-on} # nginx sendfile (Debian's nginx.conf: on)
BIG_SIZE_MIB=${BIG_SIZE_MIB:-1024} # size of the bigaccel attachment (sparse file)
BIG_RATES=${BIG_RATES-"max 128M"} # bigaccel: one curl per rate (curl --limit-rate; max: none)
REPORT_CONNECTIONS=${REPORT_CONNECTIONS:-16} # report: wrk -c
REPORT_WORKERS=${REPORT_WORKERS:-4} # report: prefork workers of node A and node B (and their edge workers =)
REPORT_LOAD=${REPORT_LOAD:-$REPORT_WORKERS} # report: long requests kept in flight on node A, sent directly
REPORT_MS=${REPORT_MS:-5000}      # report: length of one long request (mock_sleep, ms)
REPORT_STAGGER=${REPORT_STAGGER:-1} # report: 1: the long requests start (and end) REPORT_MS/REPORT_LOAD apart; 0: all together
REPORT_TIMEOUT=${REPORT_TIMEOUT:-60} # report: wrk --timeout (s); wrk leaves slower replies out of its latencies
REPORT_P99_TARGET=${REPORT_P99_TARGET:-0.10} # report: p99 edge/nginx at most this ("a small fraction")
TLS_CLIENTS=${TLS_CLIENTS:-2}     # tlsnew/tlsresume: client processes (benches/tlsconn.py --clients, or s_time instances)
TLS_TOOL=${TLS_TOOL:-tlsconn}     # tlsnew/tlsresume client: tlsconn (benches/tlsconn.py) or s_time (cross-check; see README)
TLS_NEW=${TLS_NEW-"1.3 1.2"}      # tlsnew: TLS versions, one set of rounds each (1.3, 1.2)
TLS_RESUME=${TLS_RESUME-"1.3 1.2 1.2id"} # tlsresume: 1.3 (tickets), 1.2 (tickets), 1.2id (session IDs)
TLS_NAME=${TLS_NAME:-odoo.mycompany.com} # certificate name and the SNI the clients send
EDGE_HTTP2=${EDGE_HTTP2:-true}    # odoo-edge [listeners.tls] http2 (ALPN h2 offered; wrk and tlsconn.py use none)
NGINX_SSL_SESSION_CACHE=${NGINX_SSL_SESSION_CACHE:-shared:SSL:10m} # nginx ssl_session_cache (none: nginx's default, as the docs leave it)
OUT=${OUT:-$HERE/out/$(date +%Y%m%d-%H%M%S)}

die() {
  echo "run.sh: $*" >&2
  exit 1
}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

check_int() { # name value min max
  [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3 && $2 <= $4)) || die "$1=$2: expected an integer in $3..$4"
}
check_int DURATION "$DURATION" 1 3600
check_int WARMUP "$WARMUP" 0 600
check_int ROUNDS "$ROUNDS" 1 50
check_int WS_ROUNDS "$WS_ROUNDS" 1 50
check_int CONNECTIONS "$CONNECTIONS" 1 10000
check_int WRK_THREADS "$WRK_THREADS" 1 64
check_int WS_COUNT "$WS_COUNT" 1 60000
check_int WS_BATCH "$WS_BATCH" 1 5000
check_int WS_TIMEOUT "$WS_TIMEOUT" 1 120
check_int WS_SETTLE "$WS_SETTLE" 0 60
check_int PORT_BASE "$PORT_BASE" 1024 65000
check_int MOCK_WORKERS "$MOCK_WORKERS" 1 1000
check_int EDGE_THREADS "$EDGE_THREADS" 0 64
check_int NGINX_WORKERS "$NGINX_WORKERS" 1 64
check_int NOFILE "$NOFILE" 1024 1048576
check_int PROFILE_SECONDS "$PROFILE_SECONDS" 1 120
check_int BIG_SIZE_MIB "$BIG_SIZE_MIB" 1 16384
check_int REPORT_CONNECTIONS "$REPORT_CONNECTIONS" 1 10000
check_int REPORT_WORKERS "$REPORT_WORKERS" 1 1000
check_int REPORT_LOAD "$REPORT_LOAD" 1 256
check_int REPORT_MS "$REPORT_MS" 100 600000
check_int REPORT_TIMEOUT "$REPORT_TIMEOUT" 1 3600
check_int REPORT_STAGGER "$REPORT_STAGGER" 0 1
[[ $REPORT_P99_TARGET =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "REPORT_P99_TARGET=$REPORT_P99_TARGET: expected a number"
[[ $NGINX_SENDFILE == on || $NGINX_SENDFILE == off ]] || die "NGINX_SENDFILE=$NGINX_SENDFILE: on or off"
for r in $BIG_RATES; do
  [[ $r == max || $r =~ ^[0-9]+[KMG]?$ ]] || die "BIG_RATES: $r is not max or a curl --limit-rate value"
done
[[ -n $BIG_RATES ]] || die "BIG_RATES is empty"
check_int TLS_CLIENTS "$TLS_CLIENTS" 1 16
for v in $TLS_NEW; do
  [[ $v == 1.3 || $v == 1.2 ]] || die "TLS_NEW: $v is not 1.3 or 1.2"
done
for v in $TLS_RESUME; do
  [[ $v == 1.3 || $v == 1.2 || $v == 1.2id ]] || die "TLS_RESUME: $v is not 1.3, 1.2 or 1.2id"
done
[[ $TLS_NAME =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "TLS_NAME=$TLS_NAME: expected a DNS name"
[[ $EDGE_HTTP2 == true || $EDGE_HTTP2 == false ]] || die "EDGE_HTTP2=$EDGE_HTTP2: true or false"
[[ $TLS_TOOL == tlsconn || $TLS_TOOL == s_time ]] || die "TLS_TOOL=$TLS_TOOL: tlsconn or s_time"
if [[ $TLS_TOOL == s_time && " $SCENARIOS " == *" tlsresume "* && " $TLS_RESUME " == *" 1.2id "* ]]; then
  die "TLS_TOOL=s_time cannot refuse tickets, so it has no 1.2id; set TLS_RESUME without it"
fi
[[ $NGINX_SSL_SESSION_CACHE =~ ^(off|none|builtin(:[0-9]+)?|shared:[A-Za-z0-9_]+:[0-9]+[kKmM]?)$ ]] ||
  die "NGINX_SSL_SESSION_CACHE=$NGINX_SSL_SESSION_CACHE: off, none, builtin[:size] or shared:name:size"
for s in $SCENARIOS; do
  case $s in
    get | post | ws | static20k | staticjs | accel1m | bigaccel | report | tlsnew | tlsresume | tlsget) ;;
    *) die "SCENARIOS: unknown scenario $s (get, post, ws, static20k, staticjs, accel1m, bigaccel, report, tlsnew, tlsresume, tlsget)" ;;
  esac
done
[[ " $SCENARIOS " == *" tlsnew "* && -z $TLS_NEW ]] && die "TLS_NEW is empty"
[[ " $SCENARIOS " == *" tlsresume "* && -z $TLS_RESUME ]] && die "TLS_RESUME is empty"
is_files() { [[ $1 == static20k || $1 == staticjs || $1 == accel1m || $1 == bigaccel ]]; }
is_tls() { [[ $1 == tlsnew || $1 == tlsresume || $1 == tlsget ]]; }
WANT_REPORT=0
[[ " $SCENARIOS " == *" report "* ]] && WANT_REPORT=1
WANT_TLS=0     # any TLS scenario: certificate, TLS configs, TLS sanity check
WANT_TLSCONN=0 # tlsnew/tlsresume: benches/tlsconn.py
for s in $SCENARIOS; do
  is_tls "$s" && WANT_TLS=1
  [[ ($s == tlsnew || $s == tlsresume) && $TLS_TOOL == tlsconn ]] && WANT_TLSCONN=1
done

WEB1_PORT=$((PORT_BASE + 69))
WEB2_PORT=$((PORT_BASE + 70))
BUS_PORT=$((PORT_BASE + 72))
REPORT_A_PORT=$((PORT_BASE + 73)) # report scenario: node A (kept busy) and node B
REPORT_B_PORT=$((PORT_BASE + 74))
EDGE_PORT=$((PORT_BASE + 80))
NGINX_PORT=$((PORT_BASE + 81))
CLK_TCK=$(getconf CLK_TCK)

for tool in wrk curl pgrep awk sha256sum gzip truncate; do
  command -v "$tool" >/dev/null || die "$tool not found; run benches/setup.sh"
done
if ((WANT_REPORT)); then
  command -v ss >/dev/null || die "ss not found (needed by the report scenario)"
fi
if ((WANT_TLS)); then
  command -v openssl >/dev/null || die "openssl not found (needed by the TLS scenarios); run benches/setup.sh"
fi
if ((WANT_REPORT || WANT_TLSCONN)); then
  command -v python3 >/dev/null || die "python3 not found (needed by the report, tlsnew and tlsresume scenarios)"
  # the interpreter itself, not a version manager's shim, so its pid is the one we stop
  PYTHON_BIN=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
  [[ -x $PYTHON_BIN ]] || die "python3 reports an interpreter $PYTHON_BIN that is not executable"
fi
NGINX_BIN=$(command -v nginx || true)
[[ -n $NGINX_BIN ]] || { [[ -x /usr/sbin/nginx ]] && NGINX_BIN=/usr/sbin/nginx; } || die "nginx not found; run benches/setup.sh"

# --- file descriptors ----------------------------------------------------------
hard=$(ulimit -Hn)
nofile=$NOFILE
if [[ $hard != unlimited ]] && ((hard < nofile)); then
  nofile=$hard
fi
ulimit -n "$nofile"
if [[ " $SCENARIOS " == *" ws "* ]] && ((nofile < 2 * WS_COUNT + 256)); then
  die "ulimit -n is $nofile (hard limit $hard): too low for WS_COUNT=$WS_COUNT (the proxy needs two descriptors per websocket)"
fi

# --- processes: everything started is stopped on exit --------------------------
# Long-lived processes (mocks, proxies, wsidle, perf) run in their own session
# (setsid), so a Ctrl-C at the terminal reaches only this script and the
# foreground wrk/curl; the EXIT trap then stops them, by pid, in reverse order.
# wrk runs in the background under `timeout` (its own process group) and the
# script waits for it with `wait`, which a trapped signal interrupts at once;
# in the foreground, bash would run the trap only once wrk had finished.
declare -a STARTED=() # pids of processes started by this script
WS_FD=""

forget() { # pid
  local keep=() p
  for p in "${STARTED[@]}"; do
    [[ $p == "$1" ]] || keep+=("$p")
  done
  STARTED=("${keep[@]}")
}

stop_pid() { # pid [grace seconds]: TERM, wait (bounded), KILL
  local pid=$1 grace=${2:-10} i
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop within ${grace}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

nginx_workers() { # master pid -> worker pids (nginx processes only)
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do
    [[ $(cat "/proc/$c/comm" 2>/dev/null) == nginx ]] && echo "$c"
  done
  return 0
}

stop_nginx() { # master pid
  local master=$1 workers w
  workers=$(nginx_workers "$master")
  stop_pid "$master" 10
  for w in $workers; do # only if the master died without taking them along
    if [[ $(cat "/proc/$w/comm" 2>/dev/null) == nginx ]]; then
      kill -KILL "$w" 2>/dev/null || true
    fi
  done
}

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if [[ -n $WS_FD ]]; then
    exec {WS_FD}>&- || true
  fi
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    local pid=${STARTED[i]}
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == nginx ]]; then
      stop_nginx "$pid"
    else
      stop_pid "$pid" 12
    fi
  done
  rm -f "$OUT/ws.fifo"
  [[ -n ${BIG_FILE:-} ]] && rm -f "$BIG_FILE"
  if ((rc != 0)); then
    log "exit status $rc; partial outputs in $OUT"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run_bounded() { # seconds output-file command...: run in the background, wait; Ctrl-C stops it
  # (the output is redirected here, not around the call: a trap that fires
  # during `wait` would inherit that redirection)
  local limit=$1 output=$2 pid rc=0
  shift 2
  timeout -k 5 "$limit" "$@" >"$output" 2>&1 &
  pid=$!
  STARTED+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  return "$rc"
}

port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_http() { # url [tries of ~0.1 s] (https: the certificate is not checked)
  local url=$1 tries=${2:-100} i code
  for ((i = 0; i < tries; i++)); do
    code=$(curl -s -k -o /dev/null -m 1 -w '%{http_code}' "$url" || true)
    [[ $code == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

# --- /proc readings ---------------------------------------------------------------
cpu_ticks() { # pids... -> "utime stime" summed over the processes, in clock ticks
  local pid user=0 sys=0 u s
  for pid in "$@"; do
    read -r u s < <(awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0 0)
    user=$((user + u))
    sys=$((sys + s))
  done
  echo "$user $sys"
}

status_kib() { # field pids... -> sum of that /proc/PID/status field, in KiB
  local field=$1 pid total=0 v
  shift
  for pid in "$@"; do
    v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

machine_cpu() { # -> "busy total steal" jiffies over all CPUs
  # user nice system idle iowait irq softirq steal (guest time is already in user)
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t, $9; exit }' /proc/stat
}

# --- build ------------------------------------------------------------------------------
mkdir -p "$OUT/raw" "$OUT/logs" "$OUT/nginx-temp"
log "output directory: $OUT"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if ((BUILD)); then
  log "cargo build --release --bins"
  (cd "$ROOT" && cargo build --release --bins) >"$OUT/logs/build.log" 2>&1 ||
    die "cargo build --release --bins failed; see $OUT/logs/build.log"
  log "cargo build --release --bench wsidle"
  (cd "$ROOT" && cargo build --release --bench wsidle --message-format=json 2>>"$OUT/logs/build.log") \
    >"$OUT/logs/build-wsidle.json" ||
    die "cargo build --release --bench wsidle failed; see $OUT/logs/build.log"
  WSIDLE_BIN=$(grep -o '"executable":"[^"]*wsidle[^"]*"' "$OUT/logs/build-wsidle.json" |
    tail -n 1 | sed 's/^"executable":"//; s/"$//')
else
  WSIDLE_BIN=$(find "$TARGET_DIR/release/deps" -maxdepth 1 -type f -name 'wsidle-*' -perm -u+x \
    ! -name '*.d' -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)
fi
EDGE_BIN=$TARGET_DIR/release/odoo-edge
MOCK_BIN=$TARGET_DIR/release/mock-odoo
for bin in "$EDGE_BIN" "$MOCK_BIN" "$WSIDLE_BIN"; do
  [[ -n $bin && -x $bin ]] || die "missing binary ${bin:-wsidle}; run with BUILD=1"
done

# --- environment record -------------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "host: nproc=$(nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kernel: $(uname -r)"
  echo "nginx: $("$NGINX_BIN" -v 2>&1)"
  echo "wrk: $(wrk -v 2>&1 | head -n 1 || true)"
  dirty=$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null || true)
  echo "odoo-edge: git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)${dirty:+ + uncommitted changes to $(echo "$dirty" | wc -l) file(s) in src/ or Cargo.*}; binary sha256 $(sha256sum "$EDGE_BIN" | cut -c1-12)"
  echo "knobs: DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS GET_PATH=$GET_PATH WS_COUNT=$WS_COUNT WS_BATCH=$WS_BATCH WS_ROUNDS=$WS_ROUNDS SCENARIOS='$SCENARIOS' MOCK_WORKERS=$MOCK_WORKERS EDGE_THREADS=$EDGE_THREADS NGINX_WORKERS=$NGINX_WORKERS ulimit-n=$nofile"
  if ((WANT_TLS)); then
    echo "openssl: $(openssl version 2>&1)"
    ((WANT_TLSCONN)) && echo "python3: $("$PYTHON_BIN" -c 'import ssl, sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)')"
    echo "tls knobs: TLS_TOOL=$TLS_TOOL TLS_CLIENTS=$TLS_CLIENTS TLS_NEW='$TLS_NEW' TLS_RESUME='$TLS_RESUME' TLS_NAME=$TLS_NAME EDGE_HTTP2=$EDGE_HTTP2 NGINX_SSL_SESSION_CACHE=$NGINX_SSL_SESSION_CACHE"
  fi
  if ((WANT_REPORT)); then
    echo "report knobs: REPORT_CONNECTIONS=$REPORT_CONNECTIONS REPORT_WORKERS=$REPORT_WORKERS REPORT_LOAD=$REPORT_LOAD REPORT_MS=$REPORT_MS REPORT_STAGGER=$REPORT_STAGGER REPORT_TIMEOUT=$REPORT_TIMEOUT"
  fi
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/env.txt"
sed 's/^/  /' "$OUT/env.txt" >&2

# --- fixtures for the static-file and X-Accel scenarios ----------------------------------------
# Generated per run under $OUT/fixtures (not committed). The filestore follows
# mock_odoo::store_attachment: <filestore>/<db>/<id[:2]>/<id>, id = 40 lowercase
# hex (here the first 40 hex digits of the file's sha256; the mock never checks).
FIX=$OUT/fixtures
ADDONS=$FIX/addons
FILESTORE=$FIX/filestore
PNG_PATH=/web/static/src/img/banner.png
JS_PATH=/web/static/src/js/app.js
PNG_FILE=$ADDONS$PNG_PATH
JS_FILE=$ADDONS$JS_PATH
make_fixtures() {
  local tmp id
  mkdir -p "$(dirname "$PNG_FILE")" "$(dirname "$JS_FILE")" "$FILESTORE/odoo"
  # 20 KB "PNG": the PNG signature, then random bytes (incompressible, like a real PNG)
  { printf '\x89PNG\r\n\x1a\n'; head -c $((20480 - 8)) /dev/urandom; } >"$PNG_FILE"
  # 200 KB of JavaScript: varied Odoo-like module lines, so gzip gets a realistic ratio
  awk 'BEGIN {
    for (i = 0; i < 4000; i++) {
      printf "odoo.define(\"web.module_%d\", [\"@odoo/owl\", \"@web/core/registry\"], function (require) {\n", i
      printf "    \"use strict\";\n    const { Component, useState } = require(\"@odoo/owl\");\n"
      printf "    class Widget%d extends Component {\n        setup() { this.state = useState({ count: %d, name: \"w%x\" }); }\n", i, i * 7, i * 31
      printf "        onClick(ev) { this.state.count += %d; this.env.services.rpc(\"/web/dataset/call_kw/res.partner/read\", { ids: [%d] }); }\n    }\n", i % 13 + 1, i
      printf "    registry.category(\"fields\").add(\"widget_%d\", Widget%d);\n    return Widget%d;\n});\n", i, i, i
    } }' >"$JS_FILE.full" # ~1.6 MB, cut below (head in a pipe would SIGPIPE awk)
  head -c 204800 "$JS_FILE.full" >"$JS_FILE"
  rm -f "$JS_FILE.full"
  [[ $(stat -c %s "$PNG_FILE") == 20480 && $(stat -c %s "$JS_FILE") == 204800 ]] || die "static fixtures have the wrong size"
  tmp=$FILESTORE/attachment.tmp
  head -c 1048576 /dev/urandom >"$tmp"
  id=$(sha256sum "$tmp" | cut -c1-40)
  mkdir -p "$FILESTORE/odoo/${id:0:2}"
  ATTACH_FILE=$FILESTORE/odoo/${id:0:2}/$id
  mv "$tmp" "$ATTACH_FILE"
  ACCEL_PATH=/web/content/$id
  BIG_PATH="" BIG_FILE=""
  if [[ " $SCENARIOS " == *" bigaccel "* ]]; then
    # sparse: no disk blocks, but every byte is read like a real file's
    id=$(printf 'bigaccel-%s' "$BIG_SIZE_MIB" | sha256sum | cut -c1-40)
    mkdir -p "$FILESTORE/odoo/${id:0:2}"
    BIG_FILE=$FILESTORE/odoo/${id:0:2}/$id
    truncate -s "${BIG_SIZE_MIB}M" "$BIG_FILE"
    printf 'odoo-edge bigaccel fixture\n' | dd of="$BIG_FILE" conv=notrunc status=none
    BIG_PATH=/web/content/$id
  fi
}
make_fixtures

# TLS scenarios: one self-signed ECDSA P-256 certificate for both proxies,
# generated per run (never committed), valid 30 days so that odoo-edge's
# 14-day expiry warning stays quiet.
TLS_DIR=$OUT/tls
TLS_CERT=$TLS_DIR/cert.pem
TLS_KEY=$TLS_DIR/key.pem
if ((WANT_TLS)); then
  mkdir -p "$TLS_DIR"
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
    -nodes -keyout "$TLS_KEY" -out "$TLS_CERT" -days 30 -subj "/CN=$TLS_NAME" \
    -addext "subjectAltName=DNS:$TLS_NAME,DNS:localhost,IP:127.0.0.1") >"$OUT/logs/tls-cert.log" 2>&1 ||
    die "openssl req failed; see $OUT/logs/tls-cert.log"
  openssl x509 -in "$TLS_CERT" -noout -text 2>/dev/null | grep -q 'NIST CURVE: P-256' ||
    die "$TLS_CERT is not an ECDSA P-256 certificate"
  log "TLS certificate: ECDSA P-256, CN=$TLS_NAME, subjectAltName $TLS_NAME, localhost, 127.0.0.1 ($TLS_CERT)"
fi
log "fixtures: $PNG_FILE (20480 B), $JS_FILE (204800 B), $ATTACH_FILE (1 MiB)${BIG_FILE:+, $BIG_FILE ($BIG_SIZE_MIB MiB, sparse)}"

# --- mock nodes ------------------------------------------------------------------------------
ports=("$WEB1_PORT" "$WEB2_PORT" "$BUS_PORT" "$EDGE_PORT" "$NGINX_PORT")
((WANT_REPORT)) && ports+=("$REPORT_A_PORT" "$REPORT_B_PORT")
for port in "${ports[@]}"; do
  if port_in_use "$port"; then
    die "127.0.0.1:$port is already in use; pick another PORT_BASE"
  fi
done

start_mock() { # name role port args...
  local name=$1 role=$2 port=$3
  shift 3
  setsid "$MOCK_BIN" --name "$name" --role "$role" --listen "127.0.0.1:$port" "$@" \
    >"$OUT/logs/mock-$name.log" 2>&1 &
  STARTED+=("$!")
  MOCK_PIDS+=("$!")
  wait_http "http://127.0.0.1:$port/web/health" ||
    die "mock node $name did not come up on 127.0.0.1:$port; see $OUT/logs/mock-$name.log"
}
MOCK_PIDS=()
mocks_alive() {
  local pid
  for pid in "${MOCK_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a mock node (pid $pid) died; see $OUT/logs/mock-*.log"
  done
}
log "starting mock nodes (web1, web2: prefork $MOCK_WORKERS workers, --x-sendfile; bus: gevent, threaded)"
# --x-sendfile: /web/content/<id> answers X-Accel-Redirect: /web/filestore/odoo/<xx>/<id>
# with an empty body, like Odoo 16+ with x_sendfile = True; other paths are unaffected.
start_mock web1 interactive "$WEB1_PORT" --workers "$MOCK_WORKERS" --x-sendfile --filestore "$FILESTORE"
start_mock web2 interactive "$WEB2_PORT" --workers "$MOCK_WORKERS" --x-sendfile --filestore "$FILESTORE"
start_mock bus gevent "$BUS_PORT" --threaded
if ((WANT_REPORT)); then
  # Separate from web1/web2: Odoo's usual small prefork nodes (backlog 8 x workers).
  log "starting mock nodes for the report scenario (node-a, node-b: prefork $REPORT_WORKERS workers)"
  start_mock node-a interactive "$REPORT_A_PORT" --workers "$REPORT_WORKERS"
  start_mock node-b interactive "$REPORT_B_PORT" --workers "$REPORT_WORKERS"
fi

# --- proxies --------------------------------------------------------------------------------------
render() { # template output [WORKER_CONNECTIONS] [fragment for the @FILES@ line] [fragment for the @TLS@ line]
  local frag=${4:-} tls=${5:-} ssl="" edits=() edge_access=off nginx_access=off
  if [[ $ACCESS_LOG == on ]]; then
    edge_access=combined nginx_access="$OUT/logs/nginx-access.log combined"
  fi
  if [[ -n $frag ]]; then
    edits+=(-e "/^@FILES@\$/{r $frag" -e 'd' -e '}')
  else
    edits+=(-e '/^@FILES@$/d')
  fi
  if [[ -n $tls ]]; then # TLS: the fragment, and nginx's listen ... ssl
    edits+=(-e "/^@TLS@\$/{r $tls" -e 'd' -e '}')
    ssl=" ssl"
  else
    edits+=(-e '/^@TLS@$/d')
  fi
  sed "${edits[@]}" "$1" | sed -e "s|@RUN_DIR@|$OUT|g" -e "s|@LISTEN_SSL@|$ssl|g" \
    -e "s|@TLS_CERT@|$TLS_CERT|g" -e "s|@TLS_KEY@|$TLS_KEY|g" -e "s|@EDGE_HTTP2@|$EDGE_HTTP2|g" \
    -e "s|@NGINX_SSL_SESSION_CACHE@|$NGINX_SSL_SESSION_CACHE|g" -e "s|@EDGE_PORT@|$EDGE_PORT|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
    -e "s|@WEB1_PORT@|$WEB1_PORT|g" -e "s|@WEB2_PORT@|$WEB2_PORT|g" -e "s|@BUS_PORT@|$BUS_PORT|g" \
    -e "s|@MOCK_WORKERS@|$MOCK_WORKERS|g" -e "s|@EDGE_THREADS@|$EDGE_THREADS|g" \
    -e "s|@NGINX_WORKERS@|$NGINX_WORKERS|g" -e "s|@NOFILE@|$nofile|g" \
    -e "s|@NGINX_SENDFILE@|$NGINX_SENDFILE|g" -e "s|@ADDONS@|$ADDONS|g" -e "s|@FILESTORE@|$FILESTORE|g" \
    -e "s|@REPORT_A_PORT@|$REPORT_A_PORT|g" -e "s|@REPORT_B_PORT@|$REPORT_B_PORT|g" \
    -e "s|@REPORT_WORKERS@|$REPORT_WORKERS|g" -e "s|@WORKER_CONNECTIONS@|${3:-1024}|g" \
    -e "s|@EDGE_ACCESS_FORMAT@|$edge_access|g" -e "s|@NGINX_ACCESS_LOG@|$nginx_access|g" >"$2"
  if grep -q '@[A-Z_]*@' "$2"; then
    die "unfilled placeholder in $2"
  fi
}

render "$HERE/edge.toml.template" "$OUT/edge.toml"
render "$HERE/edge.toml.template" "$OUT/edge-files.toml" "" "$HERE/files.edge.template"
edge_confs=(edge edge-files)
if ((WANT_REPORT)); then
  render "$HERE/edge-report.toml.template" "$OUT/edge-report.toml"
  edge_confs+=(edge-report)
fi
if ((WANT_TLS)); then
  render "$HERE/edge.toml.template" "$OUT/edge-tls.toml" "" "" "$HERE/tls.edge.template"
  edge_confs+=(edge-tls)
fi
for conf in "${edge_confs[@]}"; do
  "$EDGE_BIN" check -c "$OUT/$conf.toml" >"$OUT/logs/$conf-check.txt" 2>&1 ||
    die "odoo-edge check -c $conf.toml failed: $(cat "$OUT/logs/$conf-check.txt")"
done
# nginx: 1024 connections for the HTTP scenarios, enough for the websockets in ws.
render "$HERE/nginx.conf.template" "$OUT/nginx-http.conf" 1024
# nginx needs a little more than two connection slots per websocket (with
# 10,128 slots it held only 4,748 and reset the rest), so give it plenty.
ws_slots=$((4 * WS_COUNT + 1024))
((ws_slots > nofile - 64)) && ws_slots=$((nofile - 64))
render "$HERE/nginx.conf.template" "$OUT/nginx-ws.conf" "$ws_slots"
render "$HERE/nginx.conf.template" "$OUT/nginx-files.conf" 1024 "$HERE/files.nginx.template"
nginx_confs=(nginx-http nginx-ws nginx-files)
if ((WANT_REPORT)); then
  # The docs' config unchanged, its `upstream odoo` pointed at node-a and node-b
  # (bash restores WEB1_PORT/WEB2_PORT after the call).
  WEB1_PORT=$REPORT_A_PORT WEB2_PORT=$REPORT_B_PORT render "$HERE/nginx.conf.template" "$OUT/nginx-report.conf" 1024
  nginx_confs+=(nginx-report)
fi
if ((WANT_TLS)); then
  render "$HERE/nginx.conf.template" "$OUT/nginx-tls.conf" 1024 "" "$HERE/tls.nginx.template"
  nginx_confs+=(nginx-tls)
fi
for conf in "${nginx_confs[@]}"; do
  "$NGINX_BIN" -t -q -c "$OUT/$conf.conf" -p "$OUT" -e "$OUT/logs/nginx-error.log" -g 'daemon off;' \
    >"$OUT/logs/$conf-test.txt" 2>&1 || die "nginx -t failed: $(cat "$OUT/logs/$conf-test.txt")"
done

PROXY_PID=""   # the process we started (edge, or nginx master)
PROXY_PIDS=()  # what to measure (edge; nginx master + workers)
PROXY_SCHEME=http

start_proxy() { # edge|nginx conf-kind(http|ws|files|report|tls)
  local which=$1 kind=$2 port i conf=edge
  [[ $kind == files ]] && conf=edge-files
  [[ $kind == report ]] && conf=edge-report
  [[ $kind == tls ]] && conf=edge-tls
  PROXY_SCHEME=http
  [[ $kind == tls ]] && PROXY_SCHEME=https
  case $which in
    edge)
      port=$EDGE_PORT
      RUST_LOG=$EDGE_LOG setsid "$EDGE_BIN" run -c "$OUT/$conf.toml" >>"$OUT/logs/edge.log" 2>&1 &
      PROXY_PID=$!
      ;;
    nginx)
      port=$NGINX_PORT
      setsid "$NGINX_BIN" -c "$OUT/nginx-$kind.conf" -p "$OUT" -e "$OUT/logs/nginx-error.log" \
        -g 'daemon off;' >>"$OUT/logs/nginx.out" 2>&1 &
      PROXY_PID=$!
      ;;
  esac
  STARTED+=("$PROXY_PID")
  wait_http "$PROXY_SCHEME://127.0.0.1:$port/web/health" ||
    die "$which did not come up on 127.0.0.1:$port; see $OUT/logs/"
  PROXY_PIDS=("$PROXY_PID")
  if [[ $which == nginx ]]; then
    for ((i = 0; i < 50; i++)); do
      mapfile -t workers < <(nginx_workers "$PROXY_PID")
      ((${#workers[@]} >= NGINX_WORKERS)) && break
      sleep 0.1
    done
    ((${#workers[@]} >= 1)) || die "nginx has no worker process"
    PROXY_PIDS+=("${workers[@]}")
  fi
  PROXY_PORT=$port
}

proxy_alive() { # edge|nginx: die unless every measured process is still there
  local pid now
  for pid in "${PROXY_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "$1 (pid $pid) died during the run; see $OUT/logs/"
  done
  if [[ $1 == nginx ]]; then
    now=$(nginx_workers "$PROXY_PID" | sort | tr '\n' ' ')
    [[ $now == "$(printf '%s\n' "${PROXY_PIDS[@]:1}" | sort | tr '\n' ' ')" ]] ||
      die "nginx workers changed during the run (a worker crashed?); see $OUT/logs/nginx-error.log"
  fi
  mocks_alive
}

stop_proxy() { # edge|nginx
  if [[ $1 == nginx ]]; then
    stop_nginx "$PROXY_PID"
  else
    stop_pid "$PROXY_PID" 12
  fi
  PROXY_PID=""
  PROXY_PIDS=()
}

# --- request bodies and sanity checks -------------------------------------------------
POST_BODY=$OUT/post2k.json
export POST_BODY
make_post_body() {
  local head tail pad
  head='{"jsonrpc":"2.0","method":"call","params":{"model":"res.partner","method":"web_search_read","args":[],"kwargs":{"specification":{"display_name":{},"email":{},"phone":{}},"domain":[["active","=",true]],"offset":0,"limit":80,"order":"","context":{"lang":"en_US","tz":"Europe/Brussels","uid":2,"allowed_company_ids":[1],"bench_padding":"'
  tail='"}}},"id":42}'
  pad=$((2048 - ${#head} - ${#tail}))
  { printf '%s' "$head"; printf '%*s' "$pad" '' | tr ' ' x; printf '%s' "$tail"; } >"$POST_BODY"
  [[ $(stat -c %s "$POST_BODY") == 2048 ]] || die "POST body is not 2048 bytes"
}
make_post_body

sanity() { # edge|nginx
  local which=$1 base nodes out
  start_proxy "$which" http
  base="http://127.0.0.1:$PROXY_PORT"
  out=$OUT/raw/sanity-$which.txt
  : >"$out"
  nodes=""
  for _ in 1 2; do
    curl -s -i -m 5 "$base$GET_PATH" >>"$out" || true
    echo >>"$out"
  done
  grep -q '^HTTP/1.1 200' "$out" || die "$which: GET $GET_PATH did not give 200; see $out"
  grep -q '"node":"web1"' "$out" && nodes+=" web1"
  grep -q '"node":"web2"' "$out" && nodes+=" web2"
  [[ $nodes == " web1 web2" ]] || die "$which: two GETs did not reach both interactive nodes; see $out"
  curl -s -i -m 5 -H 'Content-Type: application/json' --data-binary "@$POST_BODY" \
    "$base/web/dataset/call_kw" >>"$out" || true
  echo >>"$out"
  grep -q '"body_len":2048' "$out" || die "$which: the 2 KB POST did not reach a node intact; see $out"
  "$WSIDLE_BIN" --addr "127.0.0.1:$PROXY_PORT" --count 2 --hold 0 --ignore-stdin >>"$out" 2>&1 ||
    die "$which: wsidle failed; see $out"
  grep -q '^READY ok=2 failed=0' "$out" || die "$which: websocket handshake through the proxy failed; see $out"
  log "sanity $which: GET reaches web1 and web2, POST body intact, websocket 101 ($(grep -i -m1 -o 'content-length: [0-9]*' "$out" | tr -d '\r') for the GET)"
  stop_proxy "$which"
}

# One GET of a static/X-Accel scenario's URL through the running proxy; its
# reply must be 200 and, once decoded, byte-for-byte the fixture (staticjs:
# Content-Encoding gzip, since only gzip is accepted). Prints "ok <bytes on the
# wire>" or "FAIL <reason>"; keeps the headers in $OUT/raw/.
check_file() { # scenario base-url tag
  local scen=$1 base=$2 tag=$3 path file hdr body code size ae=() enc
  case $scen in
    static20k) path=$PNG_PATH file=$PNG_FILE ;;
    staticjs) path=$JS_PATH file=$JS_FILE ae=(-H 'Accept-Encoding: gzip') ;;
    accel1m) path=$ACCEL_PATH file=$ATTACH_FILE ;;
  esac
  hdr=$OUT/raw/check-$tag.headers
  body=$OUT/raw/check-$tag.body
  read -r code size < <(curl -s -m 20 "${ae[@]}" -D "$hdr" -o "$body" -w '%{http_code} %{size_download}\n' \
    "$base$path" || echo "000 0")
  enc=$(awk -F': *' 'tolower($1) == "content-encoding" { gsub(/\r/, "", $2); print $2 }' "$hdr" 2>/dev/null)
  if [[ $code != 200 ]]; then
    echo "FAIL HTTP $code"
  elif [[ $scen == staticjs ]]; then
    if [[ $enc != gzip ]]; then
      echo "FAIL Content-Encoding '${enc:-none}' (wanted gzip)"
    elif ! gzip -dc <"$body" | cmp -s - "$file"; then
      echo "FAIL gzip body does not decode to the fixture"
    else
      echo "ok $size"
    fi
  elif [[ -n $enc ]]; then
    echo "FAIL unexpected Content-Encoding $enc"
  elif ! cmp -s "$body" "$file"; then
    echo "FAIL body of $size bytes differs from the $(stat -c %s "$file")-byte fixture"
  else
    echo "ok $size"
  fi
  rm -f "$body"
}

# Once per proxy before the static/X-Accel scenarios: every URL checked, and
# the reply headers kept, including Accept-Encoding: gzip, br on the .js.
files_sanity() { # edge|nginx
  local which=$1 base scen res out msg=""
  start_proxy "$which" files
  base="http://127.0.0.1:$PROXY_PORT"
  out=$OUT/raw/files-headers-$which.txt
  : >"$out"
  for scen in static20k staticjs accel1m; do
    res=$(check_file "$scen" "$base" "sanity-$scen-$which")
    { echo "== $scen: $res"; cat "$OUT/raw/check-sanity-$scen-$which.headers"; } >>"$out"
    [[ $res == ok* ]] || log "WARNING: $which $scen: $res (headers in $out)"
    msg+=" $scen=${res}"
  done
  { echo "== staticjs with Accept-Encoding: gzip, br"
    curl -s -m 20 -H 'Accept-Encoding: gzip, br' -D - -o /dev/null -w 'bytes on the wire: %{size_download}\n' \
      "$base$JS_PATH" || true
    echo "== static20k, second GET with If-None-Match from the first"
    local etag
    etag=$(awk -F': *' 'tolower($1) == "etag" { gsub(/\r/, "", $2); print $2 }' "$OUT/raw/check-sanity-static20k-$which.headers")
    curl -s -m 20 ${etag:+-H "If-None-Match: $etag"} -D - -o /dev/null "$base$PNG_PATH" || true
  } >>"$out"
  msg+=" staticjs(gzip, br)=$(awk 'tolower($1) == "content-encoding:" { gsub(/\r/, "", $2); print $2 }' "$out" | tail -n 1)"
  log "files sanity $which:$msg"
  stop_proxy "$which"
}

# --- TLS: checks ----------------------------------------------------------------------------
# One GET of GET_PATH over HTTPS through the running proxy (certificate not
# checked): it must give 200, reach a node that saw the request as HTTPS
# (the mock echoes "scheme":"https", from X-Forwarded-Proto) and carry the
# Strict-Transport-Security header of Odoo's docs. Prints "ok <node>" or
# "FAIL <reason>"; keeps the reply in $OUT/raw/.
check_tls_get() { # base-url tag
  local base=$1 tag=$2 out code node
  out=$OUT/raw/check-$tag.txt
  code=$(curl -s -k -m 10 --http1.1 -D "$out.headers" -o "$out" -w '%{http_code}' "$base$GET_PATH" || echo 000)
  node=$(sed -n 's/.*"node":"\([^"]*\)".*/\1/p' "$out" 2>/dev/null | head -n 1)
  if [[ $code != 200 ]]; then
    echo "FAIL HTTP $code"
  elif ! grep -q '"scheme":"https"' "$out"; then
    echo "FAIL the node did not see HTTPS"
  elif ! grep -qi '^strict-transport-security: max-age=' "$out.headers"; then
    echo "FAIL no Strict-Transport-Security"
  else
    echo "ok ${node:-?}"
  fi
}

# `openssl s_client` line -> its value, e.g. "Server Temp Key: X25519, 253 bits"
s_client_field() { # file prefix (a basic regex)
  grep -a -m1 "^$2" "$1" | sed "s/^$2//; s/\r//" || true
}

# s_time output -> "<reused> <connections>" (one character per connection; r = resumed)
s_time_counts() { # file
  awk '/^[rt23*]+$/ { n += length($0); r += gsub(/r/, "") } END { printf "%d %d\n", r, n }' "$1"
}

# Once per proxy before the TLS scenarios: two GETs over HTTPS reach web1 and
# web2; what `openssl s_client` negotiates with TLS 1.3 and 1.2 (cipher, key
# exchange, signature, ALPN when offered h2 and http/1.1); and, as a
# cross-check of the resumption that tlsconn.py measures, `openssl s_time
# -reuse` (TLS 1.2; TLS 1.3 with -www, since s_time reads a TLS 1.3 ticket
# only while reading a reply). One line per proxy goes to $OUT/tls-info-<proxy>.txt.
tls_sanity() { # edge|nginx
  local which=$1 base out nodes="" res v f info=() r n i
  start_proxy "$which" tls
  base="https://127.0.0.1:$PROXY_PORT"
  out=$OUT/raw/tls-sanity-$which.txt
  : >"$out"
  for i in 1 2; do
    res=$(check_tls_get "$base" "tls-sanity-$which-$i")
    { echo "== GET $GET_PATH over HTTPS: $res"; cat "$OUT/raw/check-tls-sanity-$which-$i.txt.headers"; } >>"$out"
    [[ $res == ok* ]] || die "$which over TLS: $res; see $out"
    nodes+=" ${res#ok }"
  done
  [[ $nodes == *web1* && $nodes == *web2* ]] || die "$which over TLS: two GETs did not reach both web1 and web2 ($nodes); see $out"
  for v in 1.3 1.2; do
    f=$OUT/raw/tls-sanity-$which-s_client-$v.txt
    run_bounded 20 "$f" openssl s_client -connect "127.0.0.1:$PROXY_PORT" -servername "$TLS_NAME" \
      "-tls1_${v#1.}" -alpn h2,http/1.1 </dev/null || true
    { echo "== openssl s_client -tls1_${v#1.} -alpn h2,http/1.1"; grep -a -E '^(New,|Server Temp Key|Peer signature|ALPN|No ALPN)' "$f"; } >>"$out"
    grep -a -q "^New, TLSv$v, Cipher is" "$f" || die "$which: openssl s_client did not negotiate TLS $v; see $f"
    info+=("TLS $v: $(s_client_field "$f" 'New, TLSv[0-9.]*, Cipher is '), key exchange $(s_client_field "$f" 'Server Temp Key: '), $(s_client_field "$f" 'Peer signature type: ') signature, ALPN $(s_client_field "$f" 'ALPN protocol: ' | grep . || echo none)")
  done
  f=$OUT/raw/tls-sanity-$which-s_time-1.2.txt
  run_bounded 30 "$f" openssl s_time -connect "127.0.0.1:$PROXY_PORT" -reuse -time 1 -tls1_2 || true
  read -r r n < <(s_time_counts "$f")
  info+=("s_time -reuse -tls1_2: $r of $n resumed")
  f=$OUT/raw/tls-sanity-$which-s_time-1.3.txt
  run_bounded 30 "$f" openssl s_time -connect "127.0.0.1:$PROXY_PORT" -reuse -time 1 -tls1_3 -www "$GET_PATH" || true
  read -r r n < <(s_time_counts "$f")
  info+=("s_time -reuse -tls1_3 -www: $r of $n resumed")
  (IFS=';'; echo "${info[*]}") | sed 's/;/; /g' >"$OUT/tls-info-$which.txt"
  echo "== summary: $(cat "$OUT/tls-info-$which.txt")" >>"$out"
  log "TLS sanity $which: GETs over HTTPS reach web1 and web2 (HSTS, scheme https); $(cat "$OUT/tls-info-$which.txt")"
  stop_proxy "$which"
}

# --- scenarios -----------------------------------------------------------------------------
RUNS=$OUT/runs.tsv
WSRUNS=$OUT/ws.tsv
BIGRUNS=$OUT/big.tsv
printf 'scenario\tproxy\tround\treq_s\tp50_ms\tp99_ms\trequests\tsocket_errors\tnon2xx\tcpu_ticks\tcpu_us_per_req\tuser_us_per_req\tsys_us_per_req\tcpu_pct\thwm_kib\trss_kib\tbusy_pct\tsteal_pct\tload1\tcheck\treply_bytes\tmax_ms\tb_pct\ta_queue_max\ta_queue_mean\treports_done\traw_p50_ms\traw_p90_ms\traw_p99_ms\traw_p999_ms\traw_max_ms\twaiting_1s_at_end\tunmatched\n' >"$RUNS"
printf 'proxy\tround\trate\tcode\tbytes\tseconds\tmib_s\trss_before_kib\trss_max_kib\trss_after_kib\tgrowth_kib\thwm_kib\tcpu_ms\tsamples\n' >"$BIGRUNS"
printf 'proxy\tround\trequested\tok\tfailed\trss_before_kib\trss_after_kib\tkib_per_ws\thwm_kib\topen_s\tstill_open\n' >"$WSRUNS"
TLSRUNS=$OUT/tls.tsv
printf 'scenario\tvariant\tproxy\tround\tconnections\ttotal_connections\tconn_s\treused\treused_pct\tfailed\tno_ticket\tversion\tcipher\tticket\tp50_ms\tp90_ms\tp99_ms\tmax_ms\tcpu_ticks\tcpu_us_per_conn\tuser_us_per_conn\tsys_us_per_conn\tcpu_pct\thwm_kib\tbusy_pct\tsteal_pct\tload1\tcheck\tlog_lines\n' >"$TLSRUNS"

parse_wrk() { # file -> "req_s p50_ms p99_ms requests socket_errors non2xx max_ms"
  awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000
      if (v ~ /s$/) return v * 1000
      return v + 0
    }
    $1 == "Latency" && NF >= 4 && !lat { lat = 1; max = ms($4) }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    / requests in / { req = $1 }
    $1 == "Requests/sec:" { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    END { printf "%s %s %s %s %d %d %s\n", rps, p50, p99, req, errs, non2xx, (lat ? max : "nan") }
  ' "$1"
}

with_query() { # path query -> path?query, or path&query when path has a query already
  if [[ $1 == *\?* ]]; then echo "$1&$2"; else echo "$1?$2"; fi
}

wrk_args() { # scenario -> wrk arguments after the common ones
  case $1 in
    get | report | tlsget) echo "$GET_PATH" ;;
    post) echo "/web/dataset/call_kw" ;;
    static20k) echo "$PNG_PATH" ;;
    staticjs) echo "$JS_PATH" ;;
    accel1m) echo "$ACCEL_PATH" ;;
  esac
}

# --- tlsnew / tlsresume: new TLS connections per second --------------------------------------
# benches/tlsconn.py (TLS_CLIENTS processes) opens one connection after
# another through a fresh TLS proxy: TCP connect, handshake (full, or
# resuming the previous connection's session), read the TLS 1.3 tickets,
# close_notify, close. No HTTP request: the proxy's CPU per connection is the
# cost of accepting, handshaking and closing.
tls_client() { # mode variant seconds output
  if [[ $TLS_TOOL == s_time ]]; then
    s_time_client "$@"
    return
  fi
  run_bounded $(($3 + 60)) "$4" "$PYTHON_BIN" "$HERE/tlsconn.py" --addr "127.0.0.1:$PROXY_PORT" \
    --mode "$1" --tls "$2" --sni "$TLS_NAME" --clients "$TLS_CLIENTS" --duration "$3" --timeout 10
}

# TLS_TOOL=s_time: `openssl s_time` instead of tlsconn.py, TLS_CLIENTS
# instances in parallel, for a cross-check with OpenSSL's own tool. It prints
# one character per connection (r: resumed) and no latencies. Its TLS 1.3
# -reuse resumes only with -www (it reads the ticket only while reading a
# reply), so tlsresume 1.3 sends `GET GET_PATH HTTP/1.0` on every connection
# (a proxied request each); it has no way to refuse tickets, so no 1.2id.
# It closes with close_notify, but leaves the TLS 1.3 tickets unread.
s_time_client() { # mode variant seconds output
  local mode=reuse variant=$2 secs=$3 out=$4 i w0 w1 args pids=() rc=0 r n reused=0 conns=0 failed=0 total=0
  [[ $1 == new ]] && mode=new
  args=(-connect "127.0.0.1:$PROXY_PORT" "-$mode" -time "$secs" "-tls1_${variant#1.}")
  [[ $mode == reuse && $variant == 1.3 ]] && args+=(-www "$GET_PATH")
  w0=$(date +%s.%N)
  for ((i = 1; i <= TLS_CLIENTS; i++)); do
    timeout -k 5 $((secs + 60)) openssl s_time "${args[@]}" >"$out.$i" 2>&1 &
    pids+=("$!")
    STARTED+=("$!")
  done
  for i in "${pids[@]}"; do
    wait "$i" || rc=$?
    forget "$i"
  done
  w1=$(date +%s.%N)
  for ((i = 1; i <= TLS_CLIENTS; i++)); do
    read -r r n < <(s_time_counts "$out.$i")
    reused=$((reused + r)) conns=$((conns + n))
    grep -q '^ERROR' "$out.$i" && failed=$((failed + 1))
  done
  total=$conns
  [[ $mode == reuse ]] && total=$((conns + TLS_CLIENTS)) # each instance's first, unmeasured connection
  awk -v c="$conns" -v t="$total" -v r="$reused" -v f="$failed" -v w0="$w0" -v w1="$w1" -v v="$variant" 'BEGIN {
    printf "RESULT connections=%d total_connections=%d seconds=%.2f conn_s=%.1f reused=%d failed=%d no_ticket=0 version=TLSv%s cipher=- ticket=- p50_ms=nan p90_ms=nan p99_ms=nan max_ms=nan\n",
      c, t, w1 - w0, c / (w1 - w0), r, f, v }' >"$out"
  return "$rc"
}

log_lines() { # file -> its line count (0 when missing)
  if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi
}

run_tls() { # scenario variant proxy round
  local scen=$1 variant=$2 which=$3 round=$4 mode=new raw base check node line logf l0 l1
  local t0 t1 m0 m1 w0 w1 hwm load1 kv conns total conn_s reused failed noticket version cipher ticket
  local p50 p90 p99 pmax reused_pct cpu_us user_us sys_us cpu_pct busy steal ticks fields
  [[ $scen == tlsresume ]] && mode=resume
  raw=$OUT/raw/$scen-$variant-$which-$round.txt
  logf=$OUT/logs/edge.log
  [[ $which == nginx ]] && logf=$OUT/logs/nginx-error.log
  start_proxy "$which" tls
  base="https://127.0.0.1:$PROXY_PORT"
  read -r check node <<<"$(check_tls_get "$base" "$scen-$variant-$which-$round")"
  if [[ $check != ok ]]; then
    log "WARNING: $scen $variant through $which, round $round: GET over HTTPS: $check $node"
    check=FAIL
  fi
  if ((WARMUP > 0)); then
    tls_client "$mode" "$variant" "$WARMUP" "$OUT/raw/$scen-$variant-$which-$round-warmup.txt" ||
      log "warm-up tlsconn.py failed (ignored)"
  fi
  load1=$(cut -d' ' -f1 /proc/loadavg)
  l0=$(log_lines "$logf")
  t0=$(cpu_ticks "${PROXY_PIDS[@]}")
  m0=$(machine_cpu)
  w0=$(date +%s.%N)
  tls_client "$mode" "$variant" "$DURATION" "$raw" || die "tlsconn.py failed; see $raw"
  w1=$(date +%s.%N)
  t1=$(cpu_ticks "${PROXY_PIDS[@]}")
  m1=$(machine_cpu)
  hwm=$(status_kib VmHWM "${PROXY_PIDS[@]}")
  l1=$(log_lines "$logf")
  proxy_alive "$which"
  stop_proxy "$which"

  line=$(grep -m1 '^RESULT ' "$raw" || true)
  [[ -n $line ]] || die "tlsconn.py printed no RESULT line; see $raw"
  kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  conns=$(kv connections) total=$(kv total_connections) conn_s=$(kv conn_s) reused=$(kv reused)
  failed=$(kv failed) noticket=$(kv no_ticket) version=$(kv version) cipher=$(kv cipher) ticket=$(kv ticket)
  p50=$(kv p50_ms) p90=$(kv p90_ms) p99=$(kv p99_ms) pmax=$(kv max_ms)
  ((conns > 0)) || die "no TLS connection completed; see $raw"
  # CPU per connection: the proxy's CPU over every connection it served in
  # the window (the measured ones and each client process's first one);
  # CPU use: over the client's whole run (start-up included).
  read -r reused_pct cpu_us user_us sys_us cpu_pct busy steal ticks <<<"$(awk -v t0="$t0" -v t1="$t1" \
    -v hz="$CLK_TCK" -v n="$total" -v c="$conns" -v r="$reused" -v w0="$w0" -v w1="$w1" -v m0="$m0" -v m1="$m1" 'BEGIN {
      split(t0, a, " "); split(t1, b, " "); u = b[1] - a[1]; s = b[2] - a[2]; t = u + s
      split(m0, x, " "); split(m1, y, " "); tot = y[2] - x[2]; if (tot <= 0) tot = 1
      us = 1e6 / hz / n; wall = w1 - w0; if (wall <= 0) wall = 1
      printf "%.1f %.1f %.1f %.1f %.1f %.1f %.1f %d\n", r / c * 100, t * us, u * us, s * us, t / hz / wall * 100,
        (y[1] - x[1]) / tot * 100, (y[3] - x[3]) / tot * 100, t }')"
  fields=("$scen" "$variant" "$which" "$round" "$conns" "$total" "$conn_s" "$reused" "$reused_pct" "$failed"
    "$noticket" "$version" "$cipher" "$ticket" "$p50" "$p90" "$p99" "$pmax" "$ticks" "$cpu_us" "$user_us"
    "$sys_us" "$cpu_pct" "$hwm" "$busy" "$steal" "$load1" "$check" $((l1 - l0)))
  (IFS=$'\t'; echo "${fields[*]}") >>"$TLSRUNS"
  log "$(printf '%-9s %-5s %-5s round %d: %7.0f conn/s  resumed %5.1f%%  handshake p50 %5.2f ms p99 %6.2f ms  CPU %6.1f us/conn (%5.1f%% of a core)  %s %s  failed %d  log +%d' \
    "$scen" "$variant" "$which" "$round" "$conn_s" "$reused_pct" "$p50" "$p99" "$cpu_us" "$cpu_pct" "$version" "$cipher" "$failed" $((l1 - l0)))"
  if ((failed > 0)); then
    log "WARNING: $failed TLS connection(s) through $which failed; see $raw"
  fi
  if [[ $version != "TLSv${variant%id}" ]]; then
    log "WARNING: $scen $variant through $which negotiated $version; see $raw"
  fi
  if [[ $mode == resume ]] && awk -v p="$reused_pct" 'BEGIN { exit !(p < 99) }'; then
    log "WARNING: $which resumed only $reused_pct% of the $variant sessions offered; see $raw"
  fi
  if [[ $mode == new && $reused != 0 ]]; then
    log "WARNING: $which resumed $reused connections in a full-handshake run; see $raw"
  fi
}

# --- the report scenario: node-a busy with long requests the proxy cannot see ----------------
# benches/reportload.py keeps REPORT_LOAD requests of REPORT_MS ms in flight on
# node-a, sent to it directly (as a second edge or an XML-RPC script would),
# each re-sent as soon as it ends, for the whole scenario (every round of both
# proxies). Short GETs then go through the proxy under test to node-a and node-b.
REPORT_PATH=$(with_query "$GET_PATH" "mock_sleep=$REPORT_MS")
REPORT_LOAD_PID="" # the `timeout` running reportload.py
REPORT_PY_PID=""   # the interpreter itself
REPORT_STATUS=$OUT/raw/report-load.status # in_flight=N sent=N done=N ok=N failed=N, every 100 ms
REPORT_LOG=$OUT/raw/report-load.txt       # one line per finished long request

start_report_load() {
  local limit per i
  # long enough for every run of both proxies (each waits up to 2 reports for node-a to settle)
  limit=$((ROUNDS * 2 * (WARMUP + DURATION + 2 * REPORT_MS / 1000 + 30) + 60))
  per=$((limit * 1000 / REPORT_MS + 10))
  rm -f "$REPORT_STATUS"
  setsid timeout -k 5 $((limit + REPORT_MS / 1000 + 90)) "$PYTHON_BIN" "$HERE/reportload.py" \
    --addr "127.0.0.1:$REPORT_A_PORT" --path "$REPORT_PATH" --concurrency "$REPORT_LOAD" \
    --duration "$limit" --max-requests "$per" --timeout $((REPORT_MS / 1000 + 60)) \
    --stagger "$(awk -v ms="$REPORT_MS" -v on="$REPORT_STAGGER" 'BEGIN { printf "%.3f", on * ms / 1000 }')" \
    --status "$REPORT_STATUS" >"$REPORT_LOG" 2>&1 &
  REPORT_LOAD_PID=$!
  STARTED+=("$REPORT_LOAD_PID")
  # timeout's child is the interpreter; its sockets are the load's
  REPORT_PY_PID=""
  for ((i = 0; i < 50; i++)); do
    REPORT_PY_PID=$(pgrep -P "$REPORT_LOAD_PID" | head -n 1 || true)
    [[ -n $REPORT_PY_PID ]] && break
    sleep 0.1
  done
  [[ -n $REPORT_PY_PID ]] || die "the report load did not start; see $REPORT_LOG"
  log "report load: $REPORT_LOAD x GET $REPORT_PATH straight to node-a (127.0.0.1:$REPORT_A_PORT), $( ((REPORT_STAGGER)) && echo "started $((REPORT_MS / REPORT_LOAD)) ms apart" || echo "started together"), for at most ${limit}s"
}

stop_report_load() {
  if [[ -n $REPORT_LOAD_PID ]]; then
    stop_pid "$REPORT_LOAD_PID" 5
  fi
  REPORT_LOAD_PID=""
}

report_load_alive() {
  kill -0 "$REPORT_LOAD_PID" 2>/dev/null || die "the report load stopped early; see $REPORT_LOG"
}

# node-a's listen backlog now: its accept queue length (the listener's Recv-Q:
# connections the kernel completed that no worker has taken yet). Cheap; read
# every 0.25 s during the measured runs.
report_backlog() {
  ss -Hltn "( sport = :$REPORT_A_PORT )" | awk '{ print $2; exit }'
}

# Who holds node-a's workers, from socket ownership. A connection a worker has
# accepted belongs to the mock-odoo process (`ss -p` names it); one still in
# the accept queue belongs to nobody. The load's own connections are those of
# the reportload.py process. Prints one line:
#   <epoch> load_busy=N other_busy=N queued=N abandoned=N backlog=N load_in_flight=N
# load_busy: workers serving the load's long requests; other_busy: workers
# serving anything else; queued: live connections waiting in the accept queue
# (such as a proxy's requests or health probes); abandoned: queued connections
# whose client has already closed (CLOSE_WAIT), e.g. a warm-up's leftovers.
report_holders() {
  local f
  f=$(sed -n 's/^in_flight=\([0-9]*\) .*/\1/p' "$REPORT_STATUS" 2>/dev/null || true)
  {
    ss -Htnp state established "( dport = :$REPORT_A_PORT )" | sed 's/^/C /'
    ss -Htnp state established "( sport = :$REPORT_A_PORT )" | sed 's/^/S /'
    ss -Htnp state close-wait "( sport = :$REPORT_A_PORT )" | sed 's/^/W /'
    ss -Hltn "( sport = :$REPORT_A_PORT )" | sed 's/^/L /'
  } | awk -v py="pid=$REPORT_PY_PID," -v f="${f:-?}" -v now="$(date +%s.%N | cut -c1-14)" '
    function port(a) { sub(/.*:/, "", a); return a }
    $1 == "C" { if (index($0, py)) load[port($4)] = 1; next }  # C Recv-Q Send-Q local peer users
    $1 == "S" { if ($0 ~ /users:/) { if (port($5) in load) busy++; else other++ } else queued++; next }
    $1 == "W" { if ($0 !~ /users:/) abandoned++; next }
    $1 == "L" { backlog = $3 }                                 # L LISTEN Recv-Q Send-Q ...
    END { printf "%s load_busy=%d other_busy=%d queued=%d abandoned=%d backlog=%s load_in_flight=%s\n",
      now, busy, other, queued, abandoned, (backlog == "" ? "?" : backlog), f }'
}

# Waits (at most two long requests' time plus 10 s) until node-a is held as
# the scenario wants it: min(REPORT_LOAD, REPORT_WORKERS) workers serving the
# load's long requests, REPORT_LOAD of them in flight, and no abandoned
# connection in the accept queue. Live connections waiting there (a proxy's
# health probe, say) are allowed and reported. Appends every reading to the
# raw file; prints "ok <workers on the load> <queued>" or "FAIL <last reading>".
report_busy_wait() { # raw-file
  local raw=$1 i snap busy other queued abandoned backlog f want tries
  want=$((REPORT_LOAD < REPORT_WORKERS ? REPORT_LOAD : REPORT_WORKERS))
  tries=$(((2 * REPORT_MS / 1000 + 10) * 4))
  for ((i = 0; i < tries; i++)); do
    snap=$(report_holders)
    echo "$snap" >>"$raw"
    read -r _ busy other queued abandoned backlog f <<<"$(sed 's/[a-z_]*=//g' <<<"$snap")"
    if [[ $busy == "$want" && $abandoned == 0 && $f == "$REPORT_LOAD" ]]; then
      echo "ok $busy $queued"
      return 0
    fi
    report_load_alive
    sleep 0.25
  done
  echo "FAIL $snap"
}

# node-a's own counters. Its /__mock/stats is served by the same prefork
# workers, so while the load holds all of them the answer comes only when a
# report ends, and that report is no longer counted in in_flight.
report_mock_stats() { # port -> the JSON, or "unavailable"
  curl -s -m $((REPORT_MS / 1000 + 10)) "http://127.0.0.1:$1/__mock/stats" || echo unavailable
}
raw_field() { # "raw latency: k=v ..." line, key -> value
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"
}
json_num() { # json key -> number (or empty)
  sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" <<<"$1"
}

# Once per proxy before the rounds (no load yet): 8 concurrent GETs that each
# take 300 ms must all give 200 and reach both nodes (concurrent, since an edge
# that picks the node with the fewest requests in flight may send sequential
# ones all to the same node).
report_sanity() { # edge|nginx
  local which=$1 base out urls=() i nodes="" ok
  start_proxy "$which" report
  base="http://127.0.0.1:$PROXY_PORT"
  out=$OUT/raw/report-sanity-$which.txt
  for ((i = 0; i < 8; i++)); do
    urls+=("$base$(with_query "$GET_PATH" "mock_sleep=300&sanity=$i")")
  done
  run_bounded 30 "$out" curl -s -m 10 -Z --parallel-max 8 --parallel-immediate \
    -w '\nHTTP %{http_code}\n' "${urls[@]}" || true
  ok=$(grep -c '^HTTP 200$' "$out" || true)
  grep -q '"node":"node-a"' "$out" && nodes+=" node-a"
  grep -q '"node":"node-b"' "$out" && nodes+=" node-b"
  ((ok == 8)) || die "report sanity through $which: $ok of 8 GETs gave 200; see $out"
  [[ $nodes == " node-a node-b" ]] || die "report sanity through $which: 8 concurrent GETs did not reach both node-a and node-b; see $out"
  log "report sanity $which: 8 concurrent GETs, all 200, reached node-a and node-b"
  stop_proxy "$which"
}

run_report_scenario() {
  local r stats
  report_sanity edge
  report_sanity nginx
  start_report_load
  echo "# node-a once the load has started: epoch load_busy other_busy queued abandoned backlog load_in_flight" \
    >"$OUT/raw/report-start.txt"
  read -r r _ <<<"$(report_busy_wait "$OUT/raw/report-start.txt")"
  [[ $r == ok ]] || die "the report load did not occupy node-a; see $OUT/raw/report-start.txt and $REPORT_LOG"
  stats=$(report_mock_stats "$REPORT_A_PORT")
  echo "node-a /__mock/stats, answered when a worker came free: $stats" >>"$OUT/raw/report-start.txt"
  log "report load steady: node-a's /__mock/stats (answered only once a report ended): in_flight=$(json_num "$stats" in_flight) max_in_flight=$(json_num "$stats" max_in_flight) requests=$(json_num "$stats" requests)"
  for ((r = 1; r <= ROUNDS; r++)); do
    run_wrk report edge "$r"
    sleep 1
    run_wrk report nginx "$r"
    sleep 1
  done
  report_load_alive
  stop_report_load
  {
    echo "after the scenario, load stopped:"
    echo "node-a: $(report_mock_stats "$REPORT_A_PORT")"
    echo "node-b: $(report_mock_stats "$REPORT_B_PORT")"
    echo "load: $(cat "$REPORT_STATUS" 2>/dev/null || echo '?')"
  } >>"$OUT/raw/report-start.txt"
  log "report load stopped: $(cat "$REPORT_STATUS" 2>/dev/null || echo '?') long requests"
}

run_wrk() { # scenario proxy round
  local scen=$1 which=$2 round=$3 path raw base lua=() t0 t1 m0 m1 hwm rss fields
  local rps p50 p99 req errs non2xx maxl ticks cpu_us user_us sys_us cpu_pct busy steal load1
  local kind=http check="" reply_bytes="" conns=$CONNECTIONS
  local b0="" b1="" b_pct=- q_max=- q_mean=- reports=- a_busy a_queued w0 w1 samples wpid i rc
  local rp50=- rp90=- rp99=- rp999=- rmax=- stuck=- unmatched=- rawline
  path=$(wrk_args "$scen")
  [[ $scen == post ]] && lua=(-s "$HERE/post2k.lua")
  [[ $scen == staticjs ]] && lua=(-H 'Accept-Encoding: gzip')
  is_files "$scen" && kind=files
  [[ $scen == tlsget ]] && kind=tls
  if [[ $scen == report ]]; then
    kind=report
    conns=$REPORT_CONNECTIONS
    # report.lua times every request itself: wrk's own percentiles are
    # corrected for coordinated omission, which misleads here (see report.lua)
    lua=(-s "$HERE/report.lua" --timeout "${REPORT_TIMEOUT}s")
  fi
  raw=$OUT/raw/$scen-$which-$round.txt
  start_proxy "$which" "$kind"
  base="$PROXY_SCHEME://127.0.0.1:$PROXY_PORT"
  if [[ $kind == files ]]; then
    read -r check reply_bytes <<<"$(check_file "$scen" "$base" "$scen-$which-$round")"
    [[ $check == ok ]] || log "WARNING: $scen through $which, round $round: $check $reply_bytes"
    [[ $check == ok ]] || { check="FAIL"; reply_bytes=""; }
  elif [[ $kind == tls ]]; then
    # 200 over HTTPS, seen as HTTPS by the node, HSTS (reply_bytes: the node)
    read -r check reply_bytes <<<"$(check_tls_get "$base" "$scen-$which-$round")"
    [[ $check == ok ]] || log "WARNING: $scen through $which, round $round: $check $reply_bytes"
    [[ $check == ok ]] || check="FAIL"
    reply_bytes=""
  fi
  if ((WARMUP > 0)); then
    run_bounded $((WARMUP + 30)) "$OUT/raw/$scen-$which-$round-warmup.txt" \
      wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" "${lua[@]}" "$base$path" ||
      log "warm-up wrk failed (ignored)"
  fi
  if [[ $kind == report ]]; then
    # Before the measured run, node-a must hold exactly the load's long
    # requests again: the warm-up's short requests that were waiting in its
    # accept queue when wrk stopped (abandoned, but still queued) must be gone,
    # or they would sit in front of the measured ones and fill the backlog.
    # They go as soon as one long request ends and a worker accepts them.
    samples=$OUT/raw/$scen-$which-$round-node-a.txt
    echo "# node-a after the warm-up, until the load holds it again: epoch load_busy other_busy queued abandoned backlog load_in_flight" >"$samples"
    read -r check a_busy a_queued <<<"$(report_busy_wait "$samples")"
    if [[ $check == ok ]]; then
      log "report    $which round $round: node-a held: $a_busy of its $REPORT_WORKERS workers on the load's long requests; $a_queued live connection(s) waiting in its backlog, none abandoned"
    else
      log "WARNING: report through $which, round $round: node-a is not as the load should hold it: $a_busy $a_queued (see $samples)"
      check=FAIL
    fi
    b0=$(json_num "$(report_mock_stats "$REPORT_B_PORT")" requests)
  fi
  load1=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(cpu_ticks "${PROXY_PIDS[@]}")
  m0=$(machine_cpu)
  if [[ $kind == report ]]; then
    # wrk in the background, node-a read every 0.25 s while it runs
    echo "# node-a's accept queue during the measured run: epoch backlog" >>"$samples"
    w0=$(date +%s.%N)
    timeout -k 5 $((DURATION + 60)) wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --latency \
      "${lua[@]}" "$base$path" >"$raw" 2>&1 &
    wpid=$!
    STARTED+=("$wpid")
    for ((i = 0; i < (DURATION + 70) * 4; i++)); do
      kill -0 "$wpid" 2>/dev/null || break
      echo "$(date +%s.%N | cut -c1-14) backlog=$(report_backlog)" >>"$samples"
      sleep 0.25
    done
    rc=0
    wait "$wpid" || rc=$?
    forget "$wpid"
    w1=$(date +%s.%N)
    ((rc == 0)) || die "wrk failed; see $raw"
  else
    run_bounded $((DURATION + 60)) "$raw" \
      wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --latency "${lua[@]}" "$base$path" ||
      die "wrk failed; see $raw"
  fi
  t1=$(cpu_ticks "${PROXY_PIDS[@]}")
  m1=$(machine_cpu)
  hwm=$(status_kib VmHWM "${PROXY_PIDS[@]}")
  rss=$(status_kib VmRSS "${PROXY_PIDS[@]}")
  if [[ $kind == report ]]; then
    b1=$(json_num "$(report_mock_stats "$REPORT_B_PORT")" requests)
    report_load_alive
  fi
  proxy_alive "$which"
  stop_proxy "$which"

  read -r rps p50 p99 req errs non2xx maxl <<<"$(parse_wrk "$raw")"
  [[ -n $req && $req -gt 0 ]] || die "no request completed; see $raw"
  if [[ $kind == report ]]; then
    # short requests node-b received during the run, per request wrk completed
    if [[ -n $b0 && -n $b1 ]]; then
      b_pct=$(awk -v a="$b0" -v b="$b1" -v r="$req" 'BEGIN { printf "%.1f", (b - a) / r * 100 }')
    fi
    read -r q_max q_mean < <(awk '/^# node-a.s accept queue during/ { on = 1; next } /^#/ { on = 0 } on {
        q = $2; sub(/^backlog=/, "", q); if (q ~ /^[0-9]+$/) { q += 0; n++; s += q; if (q > m) m = q } }
        END { if (n) printf "%d %.1f\n", m, s / n; else print "- -" }' "$samples")
    reports=$(awk -v a="$w0" -v b="$w1" '$2 + 0 >= a && $2 + 0 <= b && $4 == "status=200" { n++ } END { print n + 0 }' "$REPORT_LOG")
    rawline=$(grep -m1 '^raw latency: ' "$raw" || true)
    [[ -n $rawline ]] || die "report.lua printed no raw latency line; see $raw"
    rp50=$(raw_field "$rawline" p50_ms) rp90=$(raw_field "$rawline" p90_ms) rp99=$(raw_field "$rawline" p99_ms)
    rp999=$(raw_field "$rawline" p999_ms) rmax=$(raw_field "$rawline" max_ms)
    stuck=$(raw_field "$rawline" waiting_over_1s_at_end) unmatched=$(raw_field "$rawline" unmatched)
  fi
  read -r cpu_us user_us sys_us cpu_pct busy steal ticks <<<"$(awk -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
    -v r="$req" -v d="$DURATION" -v m0="$m0" -v m1="$m1" 'BEGIN {
      split(t0, c, " "); split(t1, e, " "); u = e[1] - c[1]; s = e[2] - c[2]; t = u + s
      split(m0, a, " "); split(m1, b, " "); tot = b[2] - a[2]; if (tot <= 0) tot = 1
      us = 1e6 / hz / r
      printf "%.2f %.2f %.2f %.1f %.1f %.1f %d\n", t * us, u * us, s * us, t / hz / d * 100,
        (b[1] - a[1]) / tot * 100, (b[3] - a[3]) / tot * 100, t }')"
  fields=("$scen" "$which" "$round" "$rps" "$p50" "$p99" "$req" "$errs" "$non2xx" "$ticks" "$cpu_us" "$user_us" "$sys_us" "$cpu_pct" "$hwm" "$rss" "$busy" "$steal" "$load1" "${check:--}" "${reply_bytes:--}" "$maxl" "$b_pct" "$q_max" "$q_mean" "$reports" "$rp50" "$rp90" "$rp99" "$rp999" "$rmax" "$stuck" "$unmatched")
  (IFS=$'\t'; echo "${fields[*]}") >>"$RUNS"
  log "$(printf '%-9s %-5s round %d: %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU %6.1f us/req (%5.1f%% of a core)  peak RSS %6.1f MiB  errors %d non-2xx %d' \
    "$scen" "$which" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$cpu_pct" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" "$errs" "$non2xx")"
  if [[ $kind == report ]]; then
    log "$(printf '%-9s %-5s round %d: per request (report.lua): p50 %s ms, p99 %s ms, max %s ms; %s waiting > 1 s at the end; node-b got %s%% of the short requests; node-a accept queue max %s, mean %s; %s long requests finished' \
      "$scen" "$which" "$round" "$rp50" "$rp99" "$rmax" "$stuck" "$b_pct" "$q_max" "$q_mean" "$reports")"
    if [[ $unmatched != 0 ]]; then
      log "WARNING: $unmatched repl(y/ies) through $which carried no bench_t echo (not timed); see $raw"
    fi
  fi
  if ((errs + non2xx > 0)); then
    log "WARNING: $which had $errs socket errors and $non2xx non-2xx replies; see $raw and $OUT/logs/"
  fi
}

# bigaccel: one curl of the BIG_SIZE_MIB attachment (X-Accel) per rate in
# BIG_RATES through a fresh proxy, to /dev/null, sampling the proxy's VmRSS
# (nginx: master + worker) every 100 ms.
run_big() { # proxy round
  local which=$1 round=$2 base rate raw pid before max after rss hwm n t0 t1 i rc lim
  local code bytes secs speed cpu_ms
  start_proxy "$which" files
  base="http://127.0.0.1:$PROXY_PORT"
  sleep 1
  for rate in $BIG_RATES; do
    raw=$OUT/raw/bigaccel-$which-$round-$rate.txt
    lim=()
    [[ $rate == max ]] || lim=(--limit-rate "$rate")
    before=$(status_kib VmRSS "${PROXY_PIDS[@]}")
    max=$before
    n=0
    t0=$(cpu_ticks "${PROXY_PIDS[@]}")
    timeout -k 5 600 curl -s -m 590 "${lim[@]}" -o /dev/null \
      -w '%{http_code} %{size_download} %{time_total} %{speed_download}\n' "$base$BIG_PATH" >"$raw" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    for ((i = 0; i < 6200; i++)); do # 620 s at most; curl is bounded by 600 s
      kill -0 "$pid" 2>/dev/null || break
      rss=$(status_kib VmRSS "${PROXY_PIDS[@]}")
      ((rss > max)) && max=$rss
      n=$((n + 1))
      sleep 0.1
    done
    rc=0
    wait "$pid" || rc=$?
    forget "$pid"
    t1=$(cpu_ticks "${PROXY_PIDS[@]}")
    sleep 0.5
    after=$(status_kib VmRSS "${PROXY_PIDS[@]}")
    hwm=$(status_kib VmHWM "${PROXY_PIDS[@]}")
    read -r code bytes secs speed <<<"$(tail -n 1 "$raw")"
    cpu_ms=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { split(a, x, " "); split(b, y, " ");
      printf "%.0f", (y[1] + y[2] - x[1] - x[2]) * 1000 / hz }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$which" "$round" "$rate" "${code:-000}" \
      "${bytes:-0}" "${secs:-0}" "$(awk -v v="${speed:-0}" 'BEGIN { printf "%.0f", v / 1048576 }')" \
      "$before" "$max" "$after" $((max - before)) "$hwm" "$cpu_ms" "$n" >>"$BIGRUNS"
    log "$(printf 'bigaccel  %-5s round %d rate %-4s: HTTP %s, %s bytes in %ss; RSS %.1f MiB before, max %.1f MiB during (+%.1f MiB), %d samples; CPU %s ms' \
      "$which" "$round" "$rate" "${code:-000}" "${bytes:-0}" "${secs:-?}" "$(awk -v k="$before" 'BEGIN { print k / 1024 }')" \
      "$(awk -v k="$max" 'BEGIN { print k / 1024 }')" "$(awk -v k=$((max - before)) 'BEGIN { print k / 1024 }')" "$n" "$cpu_ms")"
    if [[ $rc != 0 || $code != 200 || $bytes != $((BIG_SIZE_MIB * 1048576)) ]]; then
      log "WARNING: bigaccel through $which: curl status $rc, HTTP ${code:-?}, ${bytes:-0} bytes (wanted $((BIG_SIZE_MIB * 1048576)))"
    fi
  done
  proxy_alive "$which"
  stop_proxy "$which"
}

run_ws() { # proxy round
  local which=$1 round=$2 raw fifo wspid before after hwm ready ok failed open_s still i limit per
  raw=$OUT/raw/ws-$which-$round.txt
  fifo=$OUT/ws.fifo
  start_proxy "$which" ws
  sleep 1
  before=$(status_kib VmRSS "${PROXY_PIDS[@]}")
  rm -f "$fifo"
  mkfifo "$fifo"
  # Read-write open of a FIFO does not block; wsidle sees EOF when we close it.
  exec {WS_FD}<>"$fifo"
  limit=$((WS_COUNT / WS_BATCH * WS_TIMEOUT + WS_TIMEOUT + 60)) # opening is bounded by wsidle too
  ((limit > 300)) && limit=300
  setsid "$WSIDLE_BIN" --addr "127.0.0.1:$PROXY_PORT" --count "$WS_COUNT" --batch "$WS_BATCH" \
    --timeout "$WS_TIMEOUT" --open-deadline $((limit - 20)) --hold $((limit + 120)) \
    <"$fifo" >"$raw" 2>&1 {WS_FD}>&- &
  wspid=$!
  STARTED+=("$wspid")
  ready=""
  for ((i = 0; i < limit * 5; i++)); do
    ready=$(grep -m1 '^READY ' "$raw" || true)
    [[ -n $ready ]] && break
    kill -0 "$wspid" 2>/dev/null || break
    sleep 0.2
  done
  [[ -n $ready ]] || die "wsidle did not report READY; see $raw"
  sleep "$WS_SETTLE"
  after=$(status_kib VmRSS "${PROXY_PIDS[@]}")
  hwm=$(status_kib VmHWM "${PROXY_PIDS[@]}")
  proxy_alive "$which"
  exec {WS_FD}>&-
  WS_FD=""
  for ((i = 0; i < 150; i++)); do
    kill -0 "$wspid" 2>/dev/null || break
    sleep 0.1
  done
  stop_pid "$wspid" 5
  rm -f "$fifo"
  stop_proxy "$which"

  ok=$(sed -n 's/^READY ok=\([0-9]*\) .*/\1/p' "$raw")
  failed=$(sed -n 's/^READY ok=[0-9]* failed=\([0-9]*\)$/\1/p' "$raw")
  open_s=$(sed -n 's/^wsidle: opened .* in \([0-9.]*\)s$/\1/p' "$raw")
  still=$(sed -n 's/^wsidle: .*still open \([0-9]*\)\/.*/\1/p' "$raw")
  per=$(awk -v a="$after" -v b="$before" -v n="$ok" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else print "nan" }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$which" "$round" "$WS_COUNT" "$ok" "$failed" \
    "$before" "$after" "$per" "$hwm" "${open_s:-nan}" "${still:-nan}" >>"$WSRUNS"
  log "$(printf 'ws   %-5s round %d: %s/%s open (%s failed) in %ss; RSS %.1f -> %.1f MiB = %s KiB per websocket; still open at the end: %s' \
    "$which" "$round" "$ok" "$WS_COUNT" "$failed" "${open_s:-?}" "$(awk -v k="$before" 'BEGIN { print k / 1024 }')" \
    "$(awk -v k="$after" 'BEGIN { print k / 1024 }')" "$per" "${still:-?}")"
  if ((failed > 0)); then
    log "WARNING: $failed websocket(s) failed through $which; see $raw"
  fi
}

# One small-GET load on a fresh proxy, with `perf <args> -p PIDS -- sleep
# PROFILE_SECONDS` attached for a window inside it (1 s after the load starts,
# so the window is steady state). Sets PROFILE_RPS (wrk's req/s).
perf_during_get() { # edge|nginx wrk-output perf-arguments...
  local which=$1 wrk_out=$2 base pids wrkpid rc=0
  shift 2
  start_proxy "$which" http
  base="http://127.0.0.1:$PROXY_PORT"
  if ((WARMUP > 0)); then
    run_bounded $((WARMUP + 30)) /dev/null \
      wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$base$GET_PATH" || true
  fi
  pids=$(IFS=,; echo "${PROXY_PIDS[*]}")
  timeout -k 5 $((PROFILE_SECONDS + 40)) wrk -t"$WRK_THREADS" -c"$CONNECTIONS" \
    -d"$((PROFILE_SECONDS + 2))s" --latency "$base$GET_PATH" >"$wrk_out" 2>&1 &
  wrkpid=$!
  STARTED+=("$wrkpid")
  sleep 1
  run_bounded $((PROFILE_SECONDS + 60)) "$wrk_out.perf.log" \
    perf "$@" -p "$pids" -- sleep "$PROFILE_SECONDS" || rc=$?
  wait "$wrkpid" || true
  forget "$wrkpid"
  proxy_alive "$which"
  stop_proxy "$which"
  ((rc == 0)) || log "perf failed (status $rc); see $wrk_out.perf.log"
  read -r PROFILE_RPS _ < <(parse_wrk "$wrk_out")
}

# Where a proxy's CPU samples fall: each kernel sample is put under the
# syscall it runs in (the frame below do_syscall_64), or "other kernel";
# each user sample under its object (odoo-edge, nginx, libc malloc/free, ...).
# Input: `perf script -F ip,sym,dso` (frames tab-indented, samples separated
# by blank lines). Output: category<TAB>share of samples.
perf_breakdown() { # perf.data
  perf script -i "$1" -F ip,sym,dso 2>/dev/null | awk '
    function flush(   i, name, d, cat) {
      if (!n) return
      total++
      if (dso[1] ~ /kernel/) {
        cat = "kernel, outside syscalls (interrupts, scheduler)"
        for (i = 2; i <= n; i++) if (sym[i] ~ /^do_syscall_64/) {
          name = sym[i - 1]
          sub(/^(__x64_sys_|__se_sys_|__do_sys_|ksys_|__sys_|do_)/, "", name)
          cat = "kernel, syscall " name
          break
        }
      } else {
        d = "?"
        for (i = 1; i <= n; i++) if (dso[i] != "inlined") { d = dso[i]; break }
        sub(/.*\//, "", d)
        if (d ~ /^libc/)
          cat = (sym[1] ~ /malloc|free|_int_|unlink_chunk|memalign|consolidate|tcache|realloc/) ? \
            "user, libc malloc/free" : "user, libc other"
        else
          cat = "user, " d
      }
      count[cat]++
      n = 0
    }
    /^[ \t]*$/ { flush(); next }
    /^[^ \t]/ { flush(); next }
    {
      line = $0
      sub(/^[ \t]+[0-9a-f]+ /, "", line)
      d = line; sub(/.* \(/, "", d); sub(/\)[ \t]*$/, "", d)
      s = line; sub(/ \([^()]*\)[ \t]*$/, "", s); sub(/\+0x[0-9a-f]+$/, "", s)
      n++; sym[n] = s; dso[n] = d
    }
    END { flush(); for (c in count) printf "%s\t%.4f\n", c, count[c] / total }'
}

# PROFILE=1: syscalls per request and where the CPU goes, for both proxies,
# under the small GET; plus odoo-edge's hottest functions.
profile() {
  command -v perf >/dev/null || { log "PROFILE=1 but perf is not installed (benches/setup.sh --profile)"; return 0; }
  local dir=$OUT/profile which requests
  mkdir -p "$dir"
  for which in edge nginx; do
    log "profile: counting $which's syscalls for ${PROFILE_SECONDS}s under the small GET"
    perf_during_get "$which" "$dir/syscalls-$which.wrk.txt" \
      stat -x, -e 'syscalls:sys_enter_*' -o "$dir/syscalls-$which.csv"
    requests=$(awk -v r="$PROFILE_RPS" -v s="$PROFILE_SECONDS" 'BEGIN { printf "%d", r * s }')
    # perf stat -x, lines: count,unit,event,...; per request, largest first
    awk -F, -v n="$requests" '$1 ~ /^[0-9]+$/ && $1 > 0 {
        sub(/^syscalls:sys_enter_/, "", $3); printf "%s\t%.3f\n", $3, $1 / n; t += $1 }
      END { printf "TOTAL\t%.3f\n", t / n }' "$dir/syscalls-$which.csv" |
      sort -t$'\t' -k2,2gr >"$dir/syscalls-$which.tsv"
  done
  for which in edge nginx; do
    log "profile: sampling $which's CPU for ${PROFILE_SECONDS}s under the small GET"
    perf_during_get "$which" "$dir/perf-$which.wrk.txt" \
      record -e cpu-clock -F 499 --call-graph dwarf,16384 -o "$dir/perf-$which.data"
    log "profile: analysing $which's samples"
    perf_breakdown "$dir/perf-$which.data" | sort -t$'\t' -k2,2gr >"$dir/breakdown-$which.tsv"
  done
  local report=(perf report -i "$dir/perf-edge.data" --stdio -g none)
  "${report[@]}" --no-children --sort dso,symbol --percent-limit 0.5 >"$dir/perf-edge-self.txt" \
    2>>"$dir/perf-report.log" || true
  "${report[@]}" --children --sort symbol --percent-limit 2 >"$dir/perf-edge-children.txt" \
    2>>"$dir/perf-report.log" || true
  log "profile: $dir"
}

log "sanity checks"
sanity edge
sanity nginx
for scen in $SCENARIOS; do
  if is_files "$scen"; then
    files_sanity edge
    files_sanity nginx
    break
  fi
done
if ((WANT_TLS)); then
  tls_sanity edge
  tls_sanity nginx
fi

for scen in $SCENARIOS; do
  if [[ $scen == bigaccel ]]; then
    log "scenario bigaccel: one curl of a $BIG_SIZE_MIB MiB X-Accel attachment per rate ($BIG_RATES), $ROUNDS round(s)"
    # read it once first, so the first proxy does not pay for filling the page cache
    timeout 120 cat "$BIG_FILE" >/dev/null || log "could not pre-read $BIG_FILE (ignored)"
    for ((r = 1; r <= ROUNDS; r++)); do
      run_big edge "$r"
      sleep 1
      run_big nginx "$r"
      sleep 1
    done
  elif [[ $scen == report ]]; then
    log "scenario report: $REPORT_LOAD long requests (${REPORT_MS} ms) held on node-a; wrk -t$WRK_THREADS -c$REPORT_CONNECTIONS -d${DURATION}s through each proxy, $ROUNDS round(s)"
    run_report_scenario
  elif [[ $scen == tlsnew || $scen == tlsresume ]]; then
    variants=$TLS_NEW
    [[ $scen == tlsresume ]] && variants=$TLS_RESUME
    for v in $variants; do
      log "scenario $scen, TLS $v: $([[ $TLS_TOOL == s_time ]] && echo "openssl s_time x $TLS_CLIENTS" || echo "tlsconn.py --clients $TLS_CLIENTS"), ${DURATION}s, $ROUNDS round(s)"
      for ((r = 1; r <= ROUNDS; r++)); do
        run_tls "$scen" "$v" edge "$r"
        sleep 1
        run_tls "$scen" "$v" nginx "$r"
        sleep 1
      done
    done
  elif [[ $scen == ws ]]; then
    log "scenario ws: $WS_COUNT idle websockets, $WS_ROUNDS round(s)"
    for ((r = 1; r <= WS_ROUNDS; r++)); do
      run_ws edge "$r"
      run_ws nginx "$r"
    done
  else
    log "scenario $scen: wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS round(s)"
    for ((r = 1; r <= ROUNDS; r++)); do
      run_wrk "$scen" edge "$r"
      sleep 1
      run_wrk "$scen" nginx "$r"
      sleep 1
    done
  fi
done

if ((PROFILE)); then
  profile
fi

# --- summary -------------------------------------------------------------------------------
median() { # reads numbers on stdin
  sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
col() { # file scenario-or-empty proxy column-name
  awk -F'\t' -v s="$2" -v p="$3" -v name="$4" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
    (s == "" || $1 == s) && ($1 == p || $2 == p) { print $c }' "$1"
}
med() { col "$@" | median; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "nan") print "n/a"; else printf f, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "nan" || b == "nan") print "n/a"; else printf "%.2f", a / b }'; }
ratio_small() { # like ratio, with two significant digits below 0.1
  awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "nan" || b == "nan") print "n/a"
    else if (a / b < 0.1) printf "%.2g", a / b; else printf "%.2f", a / b }'
}
verdict() { # ratio op limit
  awk -v r="$1" -v op="$2" -v l="$3" 'BEGIN {
    if (r == "n/a") { print "n/a"; exit }
    if (op == ">=") { if (r >= l) print "met"; else printf "MISSED (%.0f%% short)\n", (1 - r / l) * 100 }
    else { if (r <= l) print "met"; else printf "MISSED (%.0f%% over)\n", (r / l - 1) * 100 } }'
}

tls_info_lines() { # what the TLS sanity check saw, one bullet per proxy
  local which
  for which in edge nginx; do
    if [[ -s $OUT/tls-info-$which.txt ]]; then
      echo "- negotiated with $([[ $which == edge ]] && echo odoo-edge || echo nginx) (openssl s_client, sanity check): $(cat "$OUT/tls-info-$which.txt")"
    fi
  done
}

summarize() {
  local scen title e n
  echo "# odoo-edge vs nginx: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  sed 's/^/    /' "$OUT/env.txt"
  for scen in get post static20k staticjs accel1m tlsget; do
    [[ " $SCENARIOS " == *" $scen "* ]] || continue
    local extra=""
    case $scen in
      get) title="Small GET (\`GET $GET_PATH\`)" ;;
      post) title="2 KB JSON-RPC POST (\`POST /web/dataset/call_kw\`, 2,048-byte body)" ;;
      static20k) title="static20k: 20 KB static file (\`GET $PNG_PATH\`)" ;;
      staticjs) title="staticjs: 200 KB JavaScript, gzip accepted (\`GET $JS_PATH\`, \`Accept-Encoding: gzip\`)"
        extra=" -H 'Accept-Encoding: gzip'" ;;
      accel1m) title="accel1m: 1 MiB attachment through X-Accel-Redirect (\`GET /web/content/<id>\`)" ;;
      tlsget) title="tlsget: small GET over HTTPS, keep-alive (\`GET https://…$GET_PATH\`)" ;;
    esac
    echo
    echo "## $title"
    echo
    echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency$extra, ${ROUNDS} round(s) per proxy, alternated; median of the rounds."
    if [[ $scen == tlsget ]]; then
      echo
      echo "Over TLS: the run's ECDSA P-256 certificate; wrk offers no ALPN, so HTTP/1.1 keep-alive, and with its OpenSSL defaults negotiates TLS 1.3 with both (as \`openssl s_client\` does with the same library, below). The $CONNECTIONS handshakes happen once at the start of each run, so this measures TLS records on proxied requests, not handshakes."
      echo
      tls_info_lines
    fi
    echo
    echo "| metric | odoo-edge | nginx | edge/nginx | target |"
    echo "|---|---:|---:|---:|---|"
    local r
    e=$(med "$RUNS" "$scen" edge req_s); n=$(med "$RUNS" "$scen" nginx req_s); r=$(ratio "$e" "$n")
    echo "| req/s | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | $r | ratio >= 1.00: $(verdict "$r" '>=' 1) |"
    e=$(med "$RUNS" "$scen" edge p50_ms); n=$(med "$RUNS" "$scen" nginx p50_ms)
    echo "| p50 latency (ms) | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $(ratio "$e" "$n") | |"
    e=$(med "$RUNS" "$scen" edge p99_ms); n=$(med "$RUNS" "$scen" nginx p99_ms)
    echo "| p99 latency (ms) | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $(ratio "$e" "$n") | |"
    e=$(med "$RUNS" "$scen" edge cpu_us_per_req); n=$(med "$RUNS" "$scen" nginx cpu_us_per_req); r=$(ratio "$e" "$n")
    echo "| proxy CPU per request (µs) | $(fmt "$e" %.1f) | $(fmt "$n" %.1f) | $r | ratio <= 1.00: $(verdict "$r" '<=' 1) |"
    e=$(med "$RUNS" "$scen" edge user_us_per_req); n=$(med "$RUNS" "$scen" nginx user_us_per_req)
    echo "| … of which user (µs) | $(fmt "$e" %.1f) | $(fmt "$n" %.1f) | $(ratio "$e" "$n") | |"
    e=$(med "$RUNS" "$scen" edge sys_us_per_req); n=$(med "$RUNS" "$scen" nginx sys_us_per_req)
    echo "| … of which system (µs) | $(fmt "$e" %.1f) | $(fmt "$n" %.1f) | $(ratio "$e" "$n") | |"
    e=$(med "$RUNS" "$scen" edge cpu_pct); n=$(med "$RUNS" "$scen" nginx cpu_pct)
    echo "| proxy CPU use (% of one core) | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | $(ratio "$e" "$n") | |"
    e=$(med "$RUNS" "$scen" edge hwm_kib); n=$(med "$RUNS" "$scen" nginx hwm_kib)
    echo "| proxy peak RSS, VmHWM (MiB) | $(fmt "$(awk -v k="$e" 'BEGIN { print k / 1024 }')" %.1f) | $(fmt "$(awk -v k="$n" 'BEGIN { print k / 1024 }')" %.1f) | $(ratio "$e" "$n") | |"
    e=$(col "$RUNS" "$scen" edge socket_errors | awk '{ s += $1 } END { print s + 0 }')
    n=$(col "$RUNS" "$scen" nginx socket_errors | awk '{ s += $1 } END { print s + 0 }')
    echo "| socket errors (sum of rounds) | $e | $n | | |"
    e=$(col "$RUNS" "$scen" edge non2xx | awk '{ s += $1 } END { print s + 0 }')
    n=$(col "$RUNS" "$scen" nginx non2xx | awk '{ s += $1 } END { print s + 0 }')
    echo "| non-2xx replies (sum of rounds) | $e | $n | | |"
    if [[ $scen == tlsget ]]; then
      e=$(col "$RUNS" "$scen" edge check | sort | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? ", " : ""), $2, $1 }')
      n=$(col "$RUNS" "$scen" nginx check | sort | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? ", " : ""), $2, $1 }')
      echo "| HTTPS check before each run (200, node saw https, HSTS) | $e | $n | | |"
    fi
    if is_files "$scen"; then
      e=$(col "$RUNS" "$scen" edge check | sort | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? ", " : ""), $2, $1 }')
      n=$(col "$RUNS" "$scen" nginx check | sort | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? ", " : ""), $2, $1 }')
      echo "| reply check before each run (200, body = fixture) | $e | $n | | |"
      e=$(col "$RUNS" "$scen" edge reply_bytes | grep -v '^-$' | median); n=$(col "$RUNS" "$scen" nginx reply_bytes | grep -v '^-$' | median)
      echo "| bytes per reply on the wire (body) | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | $(ratio "$e" "$n") | |"
    fi
    echo
    echo "Every run, in order:"
    echo
    echo "| round | proxy | req/s | p50 ms | p99 ms | CPU µs/req (user + sys) | proxy CPU % | peak RSS MiB | machine busy % | steal % | load1 |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v s="$scen" 'NR > 1 && $1 == s {
      printf "| %s | %s | %.0f | %.2f | %.2f | %.1f (%.1f + %.1f) | %.0f | %.1f | %.0f | %.1f | %s |\n",
        $3, ($2 == "edge" ? "odoo-edge" : $2), $4, $5, $6, $11, $12, $13, $14, $15 / 1024, $17, $18, $19 }' "$RUNS"
    if [[ $scen == tlsget && " $SCENARIOS " == *" get "* ]]; then
      local ge gn te tn
      ge=$(med "$RUNS" get edge cpu_us_per_req); gn=$(med "$RUNS" get nginx cpu_us_per_req)
      te=$(med "$RUNS" tlsget edge cpu_us_per_req); tn=$(med "$RUNS" tlsget nginx cpu_us_per_req)
      echo
      awk -v ge="$ge" -v gn="$gn" -v te="$te" -v tn="$tn" 'BEGIN {
        printf "TLS cost per request (median CPU per request, tlsget − get in this run): odoo-edge %+.1f µs (%.1f → %.1f), nginx %+.1f µs (%.1f → %.1f).\n",
          te - ge, ge, te, tn - gn, gn, tn }'
    fi
  done
  if [[ " $SCENARIOS " == *" tlsnew "* || " $SCENARIOS " == *" tlsresume "* ]]; then
    local scen2 v tcol tmed tsum ee nn
    tcol() { # scenario variant proxy column
      awk -F'\t' -v s="$1" -v v="$2" -v p="$3" -v name="$4" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
        $1 == s && $2 == v && $3 == p { print $c }' "$TLSRUNS"
    }
    tmed() { tcol "$@" | median; }
    tsum() { tcol "$@" | awk '{ s += $1 } END { print s + 0 }'; }
    echo
    echo "## tlsnew / tlsresume: new TLS connections per second"
    echo
    if [[ $TLS_TOOL == s_time ]]; then
      echo "**Cross-check with \`openssl s_time\`** (TLS_TOOL=s_time): $TLS_CLIENTS instance(s) in parallel, \`-new\` or \`-reuse\`, \`-time $DURATION\`, one version forced; each connection: handshake (no SNI), close_notify, close, with any TLS 1.3 ticket left unread; tlsresume 1.3 adds \`-www $GET_PATH\` (without it s_time never resumes TLS 1.3), so each of its connections also carries a proxied HTTP/1.0 GET. No latencies; conn/s over the wall time of the instances."
    else
      echo "[tlsconn.py](tlsconn.py) with $TLS_CLIENTS client process(es), each opening one connection after another for ${DURATION}s: TCP connect, TLS handshake (SNI $TLS_NAME, no certificate check), read the TLS 1.3 tickets, close_notify, close; no HTTP request. tlsnew: full handshakes; tlsresume: each handshake offers the previous connection's session (1.3: ticket; 1.2: ticket; 1.2id: session ID, no ticket extension). Both proxies: the run's ECDSA P-256 certificate, one worker (odoo-edge \`worker_threads = $EDGE_THREADS\`, nginx \`worker_processes $NGINX_WORKERS\`), a fresh process per run after ${WARMUP}s of the same load. nginx: the docs' SSL parameters with \`ssl_protocols TLSv1.2 TLSv1.3\`, \`ssl_session_cache $NGINX_SSL_SESSION_CACHE\`, \`ssl_session_tickets on\`. ${ROUNDS} round(s) per proxy and version, alternated; median of the rounds."
    fi
    echo
    echo "CPU per connection = the proxy's user + system CPU during the run / the connections it served (the measured ones and each client process's first). Handshake latency: TCP connect + handshake, as the client saw it. Log lines: lines the proxy added to its log (odoo-edge: \`RUST_LOG=$EDGE_LOG\`; nginx: error_log at its default level, error) during the run, summed over the rounds."
    echo
    tls_info_lines
    echo
    echo "| scenario | TLS | conn/s odoo-edge | conn/s nginx | edge/nginx | CPU µs/conn odoo-edge | CPU µs/conn nginx | edge/nginx | resumed % edge / nginx | handshake p50 ms edge / nginx | p99 ms edge / nginx | failed edge / nginx | log lines edge / nginx |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for scen2 in tlsnew tlsresume; do
      [[ " $SCENARIOS " == *" $scen2 "* ]] || continue
      local variants=$TLS_NEW
      [[ $scen2 == tlsresume ]] && variants=$TLS_RESUME
      for v in $variants; do
        e=$(tmed "$scen2" "$v" edge conn_s); n=$(tmed "$scen2" "$v" nginx conn_s)
        local row="| $scen2 | $v | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | $(ratio "$e" "$n")"
        e=$(tmed "$scen2" "$v" edge cpu_us_per_conn); n=$(tmed "$scen2" "$v" nginx cpu_us_per_conn)
        row+=" | $(fmt "$e" %.1f) | $(fmt "$n" %.1f) | $(ratio "$e" "$n")"
        ee=$(tmed "$scen2" "$v" edge reused_pct); nn=$(tmed "$scen2" "$v" nginx reused_pct)
        row+=" | $(fmt "$ee" %.1f) / $(fmt "$nn" %.1f)"
        ee=$(tmed "$scen2" "$v" edge p50_ms); nn=$(tmed "$scen2" "$v" nginx p50_ms)
        row+=" | $(fmt "$ee" %.2f) / $(fmt "$nn" %.2f)"
        ee=$(tmed "$scen2" "$v" edge p99_ms); nn=$(tmed "$scen2" "$v" nginx p99_ms)
        row+=" | $(fmt "$ee" %.2f) / $(fmt "$nn" %.2f)"
        row+=" | $(tsum "$scen2" "$v" edge failed) / $(tsum "$scen2" "$v" nginx failed)"
        row+=" | $(tsum "$scen2" "$v" edge log_lines) / $(tsum "$scen2" "$v" nginx log_lines) |"
        echo "$row"
      done
    done
    echo
    echo "Every run, in order:"
    echo
    echo "| scenario | TLS | round | proxy | conn/s | resumed % | version, cipher | handshake p50 / p90 / p99 / max ms | CPU µs/conn (user + sys) | proxy CPU % | peak RSS MiB | failed | HTTPS check | log lines | machine busy % | steal % | load1 |"
    echo "|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    awk -F'\t' 'NR > 1 {
      printf "| %s | %s | %s | %s | %.0f | %.1f | %s, %s | %.2f / %.2f / %.2f / %.1f | %.1f (%.1f + %.1f) | %.0f | %.1f | %s | %s | %s | %.0f | %.1f | %s |\n",
        $1, $2, $4, ($3 == "edge" ? "odoo-edge" : $3), $7, $9, $12, $13, $15, $16, $17, $18, $20, $21, $22, $23,
        $24 / 1024, $10, $28, $29, $25, $26, $27 }' "$TLSRUNS"
  fi
  if [[ " $SCENARIOS " == *" report "* ]]; then
    local r eb nb medn sumc
    medn() { col "$@" | grep -v '^-$' | median; } # median, skipping runs without that figure
    sumc() { col "$@" | awk '$1 != "-" { s += $1 } END { print s + 0 }'; }
    echo
    echo "## report: short GETs while node-a is busy with long requests the proxy cannot see (issue 4)"
    echo
    echo "node-a and node-b: mock-odoo prefork, $REPORT_WORKERS workers each (listen backlog $((8 * REPORT_WORKERS))). $REPORT_LOAD concurrent \`GET $REPORT_PATH\` (${REPORT_MS} ms each, $( ((REPORT_STAGGER)) && echo "started $((REPORT_MS / REPORT_LOAD)) ms apart" || echo "started together")) go straight to node-a, each re-sent as soon as it ends, for the whole scenario. Through each proxy: \`wrk -t$WRK_THREADS -c$REPORT_CONNECTIONS -d${DURATION}s --latency --timeout ${REPORT_TIMEOUT}s -s report.lua $GET_PATH\`. odoo-edge declares both nodes with \`workers = $REPORT_WORKERS\`; nginx has the docs' \`upstream odoo\` with both (round robin). ${ROUNDS} round(s) per proxy, alternated; median of the rounds."
    echo
    echo "Latencies are per request, timed by [report.lua](report.lua). wrk's own percentiles (last rows) are corrected for coordinated omission, which here turns each request stuck behind a report into hundreds of made-up slow samples for the proxy with the higher request rate."
    echo
    echo "| metric | odoo-edge | nginx | edge/nginx | target |"
    echo "|---|---:|---:|---:|---|"
    e=$(medn "$RUNS" report edge raw_p50_ms); n=$(medn "$RUNS" report nginx raw_p50_ms)
    echo "| p50 latency (ms) | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $(ratio_small "$e" "$n") | |"
    e=$(medn "$RUNS" report edge raw_p90_ms); n=$(medn "$RUNS" report nginx raw_p90_ms)
    echo "| p90 latency (ms) | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $(ratio_small "$e" "$n") | |"
    e=$(medn "$RUNS" report edge raw_p99_ms); n=$(medn "$RUNS" report nginx raw_p99_ms); r=$(ratio_small "$e" "$n")
    echo "| **p99 latency (ms)** | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $r | ratio <= $REPORT_P99_TARGET: $(verdict "$r" '<=' "$REPORT_P99_TARGET") |"
    e=$(medn "$RUNS" report edge raw_p999_ms); n=$(medn "$RUNS" report nginx raw_p999_ms)
    echo "| p99.9 latency (ms) | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $(ratio_small "$e" "$n") | |"
    e=$(medn "$RUNS" report edge raw_max_ms); n=$(medn "$RUNS" report nginx raw_max_ms)
    echo "| max latency (ms) | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | $(ratio "$e" "$n") | |"
    e=$(med "$RUNS" report edge req_s); n=$(med "$RUNS" report nginx req_s)
    echo "| req/s | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | $(ratio "$e" "$n") | |"
    echo "| requests unanswered at the end after waiting > 1 s (sum of rounds; in no figure) | $(sumc "$RUNS" report edge waiting_1s_at_end) | $(sumc "$RUNS" report nginx waiting_1s_at_end) | | |"
    echo "| socket errors, incl. wrk timeouts (sum of rounds) | $(sumc "$RUNS" report edge socket_errors) | $(sumc "$RUNS" report nginx socket_errors) | | |"
    echo "| non-2xx replies (sum of rounds) | $(sumc "$RUNS" report edge non2xx) | $(sumc "$RUNS" report nginx non2xx) | | |"
    eb=$(medn "$RUNS" report edge b_pct); nb=$(medn "$RUNS" report nginx b_pct)
    echo "| short requests node-b received, % of those wrk completed | $(fmt "$eb" %.1f) | $(fmt "$nb" %.1f) | | |"
    e=$(medn "$RUNS" report edge a_queue_max); n=$(medn "$RUNS" report nginx a_queue_max)
    echo "| node-a accept queue during the run, max | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | | |"
    e=$(medn "$RUNS" report edge a_queue_mean); n=$(medn "$RUNS" report nginx a_queue_mean)
    echo "| node-a accept queue during the run, mean | $(fmt "$e" %.1f) | $(fmt "$n" %.1f) | | |"
    e=$(medn "$RUNS" report edge reports_done); n=$(medn "$RUNS" report nginx reports_done)
    echo "| long requests node-a finished during the run | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | | |"
    e=$(col "$RUNS" report edge check | sort | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? ", " : ""), $2, $1 }')
    n=$(col "$RUNS" report nginx check | sort | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? ", " : ""), $2, $1 }')
    echo "| node-a's workers all on the load before each run | $e | $n | | |"
    e=$(med "$RUNS" report edge p50_ms); n=$(med "$RUNS" report nginx p50_ms)
    echo "| wrk's p50, corrected for coordinated omission (ms) | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $(ratio_small "$e" "$n") | |"
    e=$(med "$RUNS" report edge p99_ms); n=$(med "$RUNS" report nginx p99_ms)
    echo "| wrk's p99, corrected for coordinated omission (ms) | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $(ratio "$e" "$n") | |"
    echo
    awk -v e="${eb:-nan}" -v n="${nb:-nan}" 'BEGIN {
      if (e == "nan" || n == "nan") { print "(node-b'\''s share could not be read from its /__mock/stats.)"; exit }
      printf "odoo-edge sent %.1f%% of the short requests to node-b, nginx %.1f%%. ", e, n
      if (e >= 90) print "odoo-edge kept them off the busy node: admission control at work."
      else print "odoo-edge spread them about like round robin: this binary has no admission control, or it did not engage." }'
    echo
    echo "Every run, in order (latencies per request, in ms; node-a queue: its listen socket's accept queue, read every 0.25 s; waiting: unanswered at the end after more than 1 s):"
    echo
    echo "| round | proxy | req/s | p50 | p90 | p99 | p99.9 | max | waiting | socket errors | non-2xx | node-b % | node-a queue max / mean | long requests done | node-a held | wrk p99 (corrected) | CPU µs/req | machine busy % | load1 |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    awk -F'\t' 'NR > 1 && $1 == "report" {
      printf "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %.2f | %.1f | %.0f | %s |\n",
        $3, ($2 == "edge" ? "odoo-edge" : $2), $4, $27, $28, $29, $30, $31, $32, $8, $9, $23, $24, $25, $26, $20, $6, $11, $17, $19 }' "$RUNS"
  fi
  if [[ " $SCENARIOS " == *" bigaccel "* ]]; then
    echo
    echo "## bigaccel: RSS while serving a $BIG_SIZE_MIB MiB attachment through X-Accel-Redirect"
    echo
    echo "One \`curl -o /dev/null\` per rate (${BIG_RATES}; max = no --limit-rate) through a fresh proxy, ${ROUNDS} round(s) per proxy, alternated; proxy VmRSS (nginx: master + worker) sampled every 100 ms. Target: growth ≤ 4 MiB (\"no more than a few MiB\")."
    echo
    echo "| rate | metric | odoo-edge | nginx | target |"
    echo "|---|---|---:|---:|---|"
    local rate ge gn bcol
    bcol() { awk -F'\t' -v p="$1" -v r="$2" -v c="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
      $1 == p && $3 == r { print $k }' "$BIGRUNS"; }
    for rate in $BIG_RATES; do
      e=$(bcol edge "$rate" rss_before_kib | median); n=$(bcol nginx "$rate" rss_before_kib | median)
      echo "| $rate | RSS before (MiB) | $(fmt "$(awk -v k="$e" 'BEGIN { print k / 1024 }')" %.1f) | $(fmt "$(awk -v k="$n" 'BEGIN { print k / 1024 }')" %.1f) | |"
      e=$(bcol edge "$rate" rss_max_kib | median); n=$(bcol nginx "$rate" rss_max_kib | median)
      echo "| $rate | max RSS during (MiB) | $(fmt "$(awk -v k="$e" 'BEGIN { print k / 1024 }')" %.1f) | $(fmt "$(awk -v k="$n" 'BEGIN { print k / 1024 }')" %.1f) | |"
      ge=$(bcol edge "$rate" growth_kib | sort -g | tail -n 1); gn=$(bcol nginx "$rate" growth_kib | sort -g | tail -n 1)
      echo "| $rate | growth, worst round (MiB) | $(fmt "$(awk -v k="$ge" 'BEGIN { print k / 1024 }')" %.2f) | $(fmt "$(awk -v k="$gn" 'BEGIN { print k / 1024 }')" %.2f) | edge ≤ 4 MiB: $(verdict "$(awk -v k="${ge:-nan}" 'BEGIN { if (k == "nan") print "n/a"; else printf "%.3f", k / 1024 }')" '<=' 4) |"
      e=$(bcol edge "$rate" mib_s | median); n=$(bcol nginx "$rate" mib_s | median)
      echo "| $rate | curl speed (MiB/s) | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | |"
      e=$(bcol edge "$rate" cpu_ms | median); n=$(bcol nginx "$rate" cpu_ms | median)
      echo "| $rate | proxy CPU for the whole download (ms) | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | |"
    done
    echo
    echo "| round | proxy | rate | HTTP | bytes | seconds | MiB/s | RSS before MiB | max RSS MiB | growth MiB | VmHWM MiB | CPU ms | samples |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' 'NR > 1 {
      printf "| %s | %s | %s | %s | %s | %s | %s | %.1f | %.1f | %.2f | %.1f | %s | %s |\n",
        $2, ($1 == "edge" ? "odoo-edge" : $1), $3, $4, $5, $6, $7, $8 / 1024, $9 / 1024, $11 / 1024, $12 / 1024, $13, $14 }' "$BIGRUNS"
  fi
  if [[ " $SCENARIOS " == *" ws "* ]]; then
    echo
    echo "## Idle websockets (\`GET /websocket\` upgrades held open, no frames)"
    echo
    echo "benches/wsidle: $WS_COUNT websockets per run, batches of $WS_BATCH, ${WS_TIMEOUT}s per handshake; proxy RSS (VmRSS, nginx: master + worker) read ${WS_SETTLE}s after all were open, minus RSS before; ${WS_ROUNDS} round(s) per proxy, alternated; median of the rounds."
    echo
    echo "| metric | odoo-edge | nginx | edge/nginx | target |"
    echo "|---|---:|---:|---:|---|"
    local r kib_e kib_n
    e=$(med "$WSRUNS" "" edge ok); n=$(med "$WSRUNS" "" nginx ok)
    echo "| websockets open (of $WS_COUNT) | $(fmt "$e" %.0f) | $(fmt "$n" %.0f) | | |"
    e=$(col "$WSRUNS" "" edge failed | awk '{ s += $1 } END { print s + 0 }')
    n=$(col "$WSRUNS" "" nginx failed | awk '{ s += $1 } END { print s + 0 }')
    echo "| failed handshakes (sum of rounds) | $e | $n | | |"
    e=$(med "$WSRUNS" "" edge rss_before_kib); n=$(med "$WSRUNS" "" nginx rss_before_kib)
    echo "| RSS before (MiB) | $(fmt "$(awk -v k="$e" 'BEGIN { print k / 1024 }')" %.1f) | $(fmt "$(awk -v k="$n" 'BEGIN { print k / 1024 }')" %.1f) | | |"
    e=$(med "$WSRUNS" "" edge rss_after_kib); n=$(med "$WSRUNS" "" nginx rss_after_kib)
    echo "| RSS with all open (MiB) | $(fmt "$(awk -v k="$e" 'BEGIN { print k / 1024 }')" %.1f) | $(fmt "$(awk -v k="$n" 'BEGIN { print k / 1024 }')" %.1f) | $(ratio "$e" "$n") | |"
    kib_e=$(med "$WSRUNS" "" edge kib_per_ws); kib_n=$(med "$WSRUNS" "" nginx kib_per_ws)
    echo "| KiB per idle websocket | $(fmt "$kib_e" %.2f) | $(fmt "$kib_n" %.2f) | $(ratio "$kib_e" "$kib_n") | edge <= 8 KiB: $(verdict "$(fmt "$kib_e" %.2f)" '<=' 8) |"
    e=$(med "$WSRUNS" "" edge open_s); n=$(med "$WSRUNS" "" nginx open_s)
    echo "| time to open all (s) | $(fmt "$e" %.2f) | $(fmt "$n" %.2f) | $(ratio "$e" "$n") | |"
    echo
    echo "| round | proxy | open | failed | RSS before MiB | RSS after MiB | KiB/websocket | peak RSS MiB | open in s | still open at end |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' 'NR > 1 {
      printf "| %s | %s | %s | %s | %.1f | %.1f | %s | %.1f | %s | %s |\n",
        $2, ($1 == "edge" ? "odoo-edge" : $1), $4, $5, $6 / 1024, $7 / 1024, $8, $9 / 1024, $10, $11 }' "$WSRUNS"
  fi
  if [[ -f $OUT/profile/syscalls-edge.tsv && -f $OUT/profile/syscalls-nginx.tsv ]]; then
    local dir=$OUT/profile cpu_e="" cpu_n=""
    if [[ " $SCENARIOS " == *" get "* ]]; then
      cpu_e=$(med "$RUNS" get edge cpu_us_per_req)
      cpu_n=$(med "$RUNS" get nginx cpu_us_per_req)
    fi
    echo
    echo "## Profile (PROFILE=1): small GET, ${PROFILE_SECONDS}s windows in steady state"
    echo
    echo "Syscalls per request (\`perf stat -e 'syscalls:sys_enter_*'\`; requests = wrk req/s × window):"
    echo
    echo "| syscall | odoo-edge | nginx |"
    echo "|---|---:|---:|"
    awk -F'\t' 'FNR == NR { e[$1] = $2; k[$1] = 1; next } { n[$1] = $2; k[$1] = 1 }
      END { for (x in k) { a = (x in e) ? e[x] : 0; b = (x in n) ? n[x] : 0
              if (a >= 0.01 || b >= 0.01) printf "%s\t%s\t%s\t%s\n", (a > b ? a : b), x, a, b } }' \
      "$dir/syscalls-edge.tsv" "$dir/syscalls-nginx.tsv" |
      sort -t$'\t' -k1,1gr | awk -F'\t' '{ printf "| %s | %.2f | %.2f |\n", $2, $3, $4 }'
    if [[ -s $dir/breakdown-edge.tsv && -s $dir/breakdown-nginx.tsv ]]; then
      echo
      echo "Where the CPU goes (\`perf record -e cpu-clock --call-graph dwarf\`; kernel samples are filed"
      echo "under the syscall they run in), as shares of each proxy's samples."
      if [[ -n $cpu_e ]]; then
        echo "µs/request = share × the median CPU per request of the small GET above."
      fi
      echo
      if [[ -n $cpu_e ]]; then
        echo "| where | odoo-edge % | nginx % | odoo-edge µs/req | nginx µs/req |"
        echo "|---|---:|---:|---:|---:|"
      else
        echo "| where | odoo-edge % | nginx % |"
        echo "|---|---:|---:|"
      fi
      awk -F'\t' -v ce="$cpu_e" -v cn="$cpu_n" '
        FNR == NR { e[$1] = $2; k[$1] = 1; next } { n[$1] = $2; k[$1] = 1 }
        END { for (x in k) { a = (x in e) ? e[x] : 0; b = (x in n) ? n[x] : 0
                if (a >= 0.005 || b >= 0.005) {
                  if (ce != "") printf "%s\t| %s | %.1f | %.1f | %.1f | %.1f |\n", a + b, x, a * 100, b * 100, a * ce, b * cn
                  else printf "%s\t| %s | %.1f | %.1f |\n", a + b, x, a * 100, b * 100 } } }' \
        "$dir/breakdown-edge.tsv" "$dir/breakdown-nginx.tsv" | sort -t$'\t' -k1,1gr | cut -f2-
    fi
    if [[ -s $dir/perf-edge-self.txt ]]; then
      echo
      echo "odoo-edge, hottest functions by self time (% of its samples):"
      echo
      echo '```text'
      awk 'NF && !/^#/ && n++ < 30 { gsub(/[ \t]+-[ \t]+-[ \t]*$/, ""); gsub(/  +/, "  "); print }' \
        "$dir/perf-edge-self.txt"
      echo '```'
    fi
  fi
  echo
  echo "Raw outputs: $OUT"
}

summarize | tee "$OUT/summary.md"
log "done; summary in $OUT/summary.md"

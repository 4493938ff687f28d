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
NGINX_SENDFILE=${NGINX_SENDFILE:-on} # nginx sendfile (Debian's nginx.conf: on)
BIG_SIZE_MIB=${BIG_SIZE_MIB:-1024} # size of the bigaccel attachment (sparse file)
BIG_RATES=${BIG_RATES-"max 128M"} # bigaccel: one curl per rate (curl --limit-rate; max: none)
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
[[ $NGINX_SENDFILE == on || $NGINX_SENDFILE == off ]] || die "NGINX_SENDFILE=$NGINX_SENDFILE: on or off"
for r in $BIG_RATES; do
  [[ $r == max || $r =~ ^[0-9]+[KMG]?$ ]] || die "BIG_RATES: $r is not max or a curl --limit-rate value"
done
[[ -n $BIG_RATES ]] || die "BIG_RATES is empty"
for s in $SCENARIOS; do
  case $s in
    get | post | ws | static20k | staticjs | accel1m | bigaccel) ;;
    *) die "SCENARIOS: unknown scenario $s (get, post, ws, static20k, staticjs, accel1m, bigaccel)" ;;
  esac
done
is_files() { [[ $1 == static20k || $1 == staticjs || $1 == accel1m || $1 == bigaccel ]]; }

WEB1_PORT=$((PORT_BASE + 69))
WEB2_PORT=$((PORT_BASE + 70))
BUS_PORT=$((PORT_BASE + 72))
EDGE_PORT=$((PORT_BASE + 80))
NGINX_PORT=$((PORT_BASE + 81))
CLK_TCK=$(getconf CLK_TCK)

for tool in wrk curl pgrep awk sha256sum gzip truncate; do
  command -v "$tool" >/dev/null || die "$tool not found; run benches/setup.sh"
done
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

wait_http() { # url [tries of ~0.1 s]
  local url=$1 tries=${2:-100} i code
  for ((i = 0; i < tries; i++)); do
    code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)
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
log "fixtures: $PNG_FILE (20480 B), $JS_FILE (204800 B), $ATTACH_FILE (1 MiB)${BIG_FILE:+, $BIG_FILE ($BIG_SIZE_MIB MiB, sparse)}"

# --- mock nodes ------------------------------------------------------------------------------
for port in "$WEB1_PORT" "$WEB2_PORT" "$BUS_PORT" "$EDGE_PORT" "$NGINX_PORT"; do
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

# --- proxies --------------------------------------------------------------------------------------
render() { # template output [WORKER_CONNECTIONS] [fragment for the @FILES@ line]
  local frag=${4:-}
  if [[ -n $frag ]]; then
    sed -e "/^@FILES@\$/{r $frag" -e 'd' -e '}' "$1"
  else
    sed -e '/^@FILES@$/d' "$1"
  fi | sed -e "s|@RUN_DIR@|$OUT|g" -e "s|@EDGE_PORT@|$EDGE_PORT|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
    -e "s|@WEB1_PORT@|$WEB1_PORT|g" -e "s|@WEB2_PORT@|$WEB2_PORT|g" -e "s|@BUS_PORT@|$BUS_PORT|g" \
    -e "s|@MOCK_WORKERS@|$MOCK_WORKERS|g" -e "s|@EDGE_THREADS@|$EDGE_THREADS|g" \
    -e "s|@NGINX_WORKERS@|$NGINX_WORKERS|g" -e "s|@NOFILE@|$nofile|g" \
    -e "s|@NGINX_SENDFILE@|$NGINX_SENDFILE|g" -e "s|@ADDONS@|$ADDONS|g" -e "s|@FILESTORE@|$FILESTORE|g" \
    -e "s|@WORKER_CONNECTIONS@|${3:-1024}|g" >"$2"
  if grep -q '@[A-Z_]*@' "$2"; then
    die "unfilled placeholder in $2"
  fi
}

render "$HERE/edge.toml.template" "$OUT/edge.toml"
render "$HERE/edge.toml.template" "$OUT/edge-files.toml" "" "$HERE/files.edge.template"
for conf in edge edge-files; do
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
for conf in nginx-http nginx-ws nginx-files; do
  "$NGINX_BIN" -t -q -c "$OUT/$conf.conf" -p "$OUT" -e "$OUT/logs/nginx-error.log" -g 'daemon off;' \
    >"$OUT/logs/$conf-test.txt" 2>&1 || die "nginx -t failed: $(cat "$OUT/logs/$conf-test.txt")"
done

PROXY_PID=""   # the process we started (edge, or nginx master)
PROXY_PIDS=()  # what to measure (edge; nginx master + workers)

start_proxy() { # edge|nginx conf-kind(http|ws|files)
  local which=$1 kind=$2 port i conf=edge
  [[ $kind == files ]] && conf=edge-files
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
  wait_http "http://127.0.0.1:$port/web/health" ||
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

# --- scenarios -----------------------------------------------------------------------------
RUNS=$OUT/runs.tsv
WSRUNS=$OUT/ws.tsv
BIGRUNS=$OUT/big.tsv
printf 'scenario\tproxy\tround\treq_s\tp50_ms\tp99_ms\trequests\tsocket_errors\tnon2xx\tcpu_ticks\tcpu_us_per_req\tuser_us_per_req\tsys_us_per_req\tcpu_pct\thwm_kib\trss_kib\tbusy_pct\tsteal_pct\tload1\tcheck\treply_bytes\n' >"$RUNS"
printf 'proxy\tround\trate\tcode\tbytes\tseconds\tmib_s\trss_before_kib\trss_max_kib\trss_after_kib\tgrowth_kib\thwm_kib\tcpu_ms\tsamples\n' >"$BIGRUNS"
printf 'proxy\tround\trequested\tok\tfailed\trss_before_kib\trss_after_kib\tkib_per_ws\thwm_kib\topen_s\tstill_open\n' >"$WSRUNS"

parse_wrk() { # file -> "req_s p50_ms p99_ms requests socket_errors non2xx"
  awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000
      if (v ~ /s$/) return v * 1000
      return v + 0
    }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    / requests in / { req = $1 }
    $1 == "Requests/sec:" { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    END { printf "%s %s %s %s %d %d\n", rps, p50, p99, req, errs, non2xx }
  ' "$1"
}

wrk_args() { # scenario -> wrk arguments after the common ones
  case $1 in
    get) echo "$GET_PATH" ;;
    post) echo "/web/dataset/call_kw" ;;
    static20k) echo "$PNG_PATH" ;;
    staticjs) echo "$JS_PATH" ;;
    accel1m) echo "$ACCEL_PATH" ;;
  esac
}

run_wrk() { # scenario proxy round
  local scen=$1 which=$2 round=$3 path raw base lua=() t0 t1 m0 m1 hwm rss fields
  local rps p50 p99 req errs non2xx ticks cpu_us user_us sys_us cpu_pct busy steal load1
  local kind=http check="" reply_bytes=""
  path=$(wrk_args "$scen")
  [[ $scen == post ]] && lua=(-s "$HERE/post2k.lua")
  [[ $scen == staticjs ]] && lua=(-H 'Accept-Encoding: gzip')
  is_files "$scen" && kind=files
  raw=$OUT/raw/$scen-$which-$round.txt
  start_proxy "$which" "$kind"
  base="http://127.0.0.1:$PROXY_PORT"
  if [[ $kind == files ]]; then
    read -r check reply_bytes <<<"$(check_file "$scen" "$base" "$scen-$which-$round")"
    [[ $check == ok ]] || log "WARNING: $scen through $which, round $round: $check $reply_bytes"
    [[ $check == ok ]] || { check="FAIL"; reply_bytes=""; }
  fi
  if ((WARMUP > 0)); then
    run_bounded $((WARMUP + 30)) "$OUT/raw/$scen-$which-$round-warmup.txt" \
      wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "${lua[@]}" "$base$path" ||
      log "warm-up wrk failed (ignored)"
  fi
  load1=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(cpu_ticks "${PROXY_PIDS[@]}")
  m0=$(machine_cpu)
  run_bounded $((DURATION + 60)) "$raw" \
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${lua[@]}" "$base$path" ||
    die "wrk failed; see $raw"
  t1=$(cpu_ticks "${PROXY_PIDS[@]}")
  m1=$(machine_cpu)
  hwm=$(status_kib VmHWM "${PROXY_PIDS[@]}")
  rss=$(status_kib VmRSS "${PROXY_PIDS[@]}")
  proxy_alive "$which"
  stop_proxy "$which"

  read -r rps p50 p99 req errs non2xx <<<"$(parse_wrk "$raw")"
  [[ -n $req && $req -gt 0 ]] || die "no request completed; see $raw"
  read -r cpu_us user_us sys_us cpu_pct busy steal ticks <<<"$(awk -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
    -v r="$req" -v d="$DURATION" -v m0="$m0" -v m1="$m1" 'BEGIN {
      split(t0, c, " "); split(t1, e, " "); u = e[1] - c[1]; s = e[2] - c[2]; t = u + s
      split(m0, a, " "); split(m1, b, " "); tot = b[2] - a[2]; if (tot <= 0) tot = 1
      us = 1e6 / hz / r
      printf "%.2f %.2f %.2f %.1f %.1f %.1f %d\n", t * us, u * us, s * us, t / hz / d * 100,
        (b[1] - a[1]) / tot * 100, (b[3] - a[3]) / tot * 100, t }')"
  fields=("$scen" "$which" "$round" "$rps" "$p50" "$p99" "$req" "$errs" "$non2xx" "$ticks" "$cpu_us" "$user_us" "$sys_us" "$cpu_pct" "$hwm" "$rss" "$busy" "$steal" "$load1" "${check:--}" "${reply_bytes:--}")
  (IFS=$'\t'; echo "${fields[*]}") >>"$RUNS"
  log "$(printf '%-9s %-5s round %d: %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU %6.1f us/req (%5.1f%% of a core)  peak RSS %6.1f MiB  errors %d non-2xx %d' \
    "$scen" "$which" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$cpu_pct" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" "$errs" "$non2xx")"
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
verdict() { # ratio op limit
  awk -v r="$1" -v op="$2" -v l="$3" 'BEGIN {
    if (r == "n/a") { print "n/a"; exit }
    if (op == ">=") { if (r >= l) print "met"; else printf "MISSED (%.0f%% short)\n", (1 - r / l) * 100 }
    else { if (r <= l) print "met"; else printf "MISSED (%.0f%% over)\n", (r / l - 1) * 100 } }'
}

summarize() {
  local scen title e n
  echo "# odoo-edge vs nginx: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  sed 's/^/    /' "$OUT/env.txt"
  for scen in get post static20k staticjs accel1m; do
    [[ " $SCENARIOS " == *" $scen "* ]] || continue
    local extra=""
    case $scen in
      get) title="Small GET (\`GET $GET_PATH\`)" ;;
      post) title="2 KB JSON-RPC POST (\`POST /web/dataset/call_kw\`, 2,048-byte body)" ;;
      static20k) title="static20k: 20 KB static file (\`GET $PNG_PATH\`)" ;;
      staticjs) title="staticjs: 200 KB JavaScript, gzip accepted (\`GET $JS_PATH\`, \`Accept-Encoding: gzip\`)"
        extra=" -H 'Accept-Encoding: gzip'" ;;
      accel1m) title="accel1m: 1 MiB attachment through X-Accel-Redirect (\`GET /web/content/<id>\`)" ;;
    esac
    echo
    echo "## $title"
    echo
    echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency$extra, ${ROUNDS} round(s) per proxy, alternated; median of the rounds."
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
  done
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

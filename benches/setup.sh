#!/usr/bin/env bash
# benches/setup.sh: install what benches/run.sh needs, from Debian's packages
# only: wrk, nginx, curl (sanity checks), procps (pgrep), for the report
# scenario iproute2 (ss) and python3, and for the TLS scenarios openssl (the
# CLI: certificate, s_client, s_time) and python3. Idempotent: when every
# tool is already there, nothing is installed and apt is not called.
#
#   benches/setup.sh            # required tools
#   benches/setup.sh --profile  # also linux-perf, for PROFILE=1 benches/run.sh
#
# Note: on a machine with systemd, installing Debian's nginx package also
# enables and starts the system nginx service (port 80). The harness never
# uses it; it starts its own nginx on 127.0.0.1 with its own configuration.
set -euo pipefail

want_perf=0
for arg in "$@"; do
  case $arg in
    --profile) want_perf=1 ;;
    -h | --help)
      sed -n '2,13p' "$0"
      exit 0
      ;;
    *)
      echo "setup.sh: unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

# tool -> Debian package
declare -A package_of=(
  [wrk]=wrk
  [nginx]=nginx
  [curl]=curl
  [pgrep]=procps
  [ss]=iproute2     # report scenario: who holds node-a's workers
  [python3]=python3 # report scenario: benches/reportload.py; tlsnew/tlsresume: benches/tlsconn.py
  [openssl]=openssl # TLS scenarios: the certificate, s_client and s_time checks
)
if ((want_perf)); then
  package_of[perf]=linux-perf
fi

have() {
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]
}

missing=()
for tool in "${!package_of[@]}"; do
  if ! have "$tool"; then
    missing+=("${package_of[$tool]}")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup.sh: nothing to install ($(printf '%s ' "${!package_of[@]}")found)"
else
  if [[ ! -r /etc/debian_version ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: not a Debian-like system; install these yourself: ${missing[*]}" >&2
    exit 1
  fi
  sudo=()
  if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "setup.sh: need root (or sudo) to install: ${missing[*]}" >&2
      exit 1
    fi
    sudo=(sudo)
  fi
  echo "setup.sh: installing ${missing[*]}"
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Show what the harness will use.
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
"$nginx_bin" -v 2>&1 | sed 's/^/setup.sh: /'
wrk_version=$(wrk -v 2>&1 | head -n 1 || true)
echo "setup.sh: ${wrk_version:-wrk present}"
if ((want_perf)); then
  if perf stat -e task-clock true >/dev/null 2>&1; then
    echo "setup.sh: perf works"
  else
    echo "setup.sh: perf is installed but cannot count events here (kernel.perf_event_paranoid, container?)" >&2
  fi
fi

#!/usr/bin/env bash
# The local stack without Docker: one Kafka-protocol broker (tansu, sqlite storage) and two
# Elasticsearch-API servers (osmem-server), "legacy" and "new", on free loopback ports.
#
#   scripts/stack.sh install   install what is missing (pinned, cached outside the clone)
#   scripts/stack.sh up        install, start, wait until ready, print `export` lines
#   scripts/stack.sh env       print the `export` lines of the running stack
#   scripts/stack.sh status    say what is running
#   scripts/stack.sh down      stop the processes this script started (by pid)
#
# Tools are cached in $DUAL_INDEXER_CACHE (default ~/.cache/dual-indexer); the stack's state,
# data and logs live in $DUAL_INDEXER_STACK_DIR (default .stack/ in the clone).
set -euo pipefail

TANSU_VERSION=0.6.0
OSMEM_VERSION=0.1.6
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DUAL_INDEXER_CACHE:-$HOME/.cache/dual-indexer}
STATE=${DUAL_INDEXER_STACK_DIR:-$ROOT/.stack}
TANSU_ROOT=$CACHE/tansu-$TANSU_VERSION
TANSU=$TANSU_ROOT/bin/tansu
OSMEM_VENV=$CACHE/osmem-$OSMEM_VERSION
ENV_FILE=$STATE/env

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

install_debian_packages() {
  local missing=()
  for pkg in gcc g++ make pkg-config zlib1g-dev libssl-dev python3-venv curl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (install them as root)"
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

install_tansu() {
  [ -x "$TANSU" ] && return 0
  mkdir -p "$CACHE"
  log "building tansu $TANSU_VERSION into $TANSU_ROOT (about 10-20 minutes on 2 cores, once)"
  ( flock 9
    [ -x "$TANSU" ] || CARGO_TARGET_DIR=$CACHE/tansu-build cargo install "tansu@$TANSU_VERSION" --locked \
        --features dynostore,libsql --root "$TANSU_ROOT" >"$CACHE/tansu-install.log" 2>&1 \
      || { tail -30 "$CACHE/tansu-install.log" >&2; die "building tansu failed; full log: $CACHE/tansu-install.log"; }
  ) 9>"$CACHE/tansu.lock"
  rm -rf "$CACHE/tansu-build"
}

install_osmem() {
  [ -x "$OSMEM_VENV/bin/python" ] && "$OSMEM_VENV/bin/python" -c 'import osmem_server' 2>/dev/null && return 0
  log "installing osmem-server $OSMEM_VERSION into $OSMEM_VENV"
  python3 -m venv "$OSMEM_VENV" >&2
  "$OSMEM_VENV/bin/pip" install --quiet "osmem-server==$OSMEM_VERSION" >&2
}

osmem_binary() { "$OSMEM_VENV/bin/python" -c 'import osmem_server; print(osmem_server.resolve_binary())'; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

wait_for() { # name, check command...
  local name=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    alive "$name" || die "$name exited while starting; see $STATE/$name.log"
    sleep 0.1
  done
  die "$name did not become ready in 10s; see $STATE/$name.log"
}

tcp_open() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)"; }

start_tansu() {
  local port; port=$(free_port)
  mkdir -p "$STATE/tansu"
  # tansu reads the part after sqlite:// as a relative path, so it runs inside its data directory.
  (cd "$STATE/tansu" && exec nohup "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine "sqlite://tansu.db" \
    >"$STATE/tansu.log" 2>&1 </dev/null) &
  echo $! >"$STATE/tansu.pid"
  echo "$port" >"$STATE/tansu.port"
  wait_for tansu tcp_open "$port"
}

start_osmem() { # name
  local name=$1 port binary; port=$(free_port); binary=$(osmem_binary)
  nohup "$binary" --addr "127.0.0.1:$port" --no-stdin-watch --no-ja >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
  echo "$port" >"$STATE/$name.port"
  wait_for "$name" curl -fsS "http://127.0.0.1:$port/"
}

write_env() {
  cat >"$ENV_FILE" <<ENV
export KAFKA_BROKERS=127.0.0.1:$(cat "$STATE/tansu.port")
export LEGACY_ES_URL=http://127.0.0.1:$(cat "$STATE/es-legacy.port")
export NEW_ES_URL=http://127.0.0.1:$(cat "$STATE/es-new.port")
export DUAL_INDEXER_STACK_DIR=$STATE
export OSMEM_BIN=$(osmem_binary)
export TANSU_BIN=$TANSU
ENV
}

running() { alive tansu && alive es-legacy && alive es-new && [ -f "$ENV_FILE" ]; }

cmd_install() { install_debian_packages; install_osmem; install_tansu; }

cmd_up() {
  if running; then cat "$ENV_FILE"; return 0; fi
  cmd_install
  cmd_down >/dev/null 2>&1 || true
  mkdir -p "$STATE"
  start_tansu
  start_osmem es-legacy
  start_osmem es-new
  write_env
  log "up: broker on $(cat "$STATE/tansu.port"), legacy ES on $(cat "$STATE/es-legacy.port"), new ES on $(cat "$STATE/es-new.port"); logs in $STATE"
  cat "$ENV_FILE"
}

cmd_down() {
  for name in es-new es-legacy tansu; do
    if alive "$name"; then
      kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$name" || break; sleep 0.1; done
      alive "$name" && kill -9 "$(cat "$STATE/$name.pid")" 2>/dev/null || true
      log "stopped $name"
    fi
    rm -f "$STATE/$name.pid"
  done
  rm -f "$ENV_FILE"
  # Broker data is removed with the stack, so the next `up` starts from an empty log.
  rm -rf "$STATE/tansu"
}

cmd_status() {
  local ok=0
  for name in tansu es-legacy es-new; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"), port $(cat "$STATE/$name.port"))"
    else echo "$name: stopped"; ok=1; fi
  done
  # Running processes without their addresses are no usable stack either.
  [ -f "$ENV_FILE" ] || { echo "env file: missing ($ENV_FILE)"; ok=1; }
  return $ok
}

cmd_env() { running || die "the stack is not running; start it with: scripts/stack.sh up"; cat "$ENV_FILE"; }

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: scripts/stack.sh install|up|down|status|env" >&2; exit 2 ;;
esac

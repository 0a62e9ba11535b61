# Helpers shared by the scripts that start throwaway servers (sourced, not
# run): scripts/skew-gate.sh, scripts/fuzz-api.sh, scripts/package-test.sh,
# scripts/demo.sh.

# use_workdir: sets work to a new temporary folder, and a trap that on exit
# stops the redis-server and `daeda serve` the script started (redis_pid,
# gateway_pid, when set) and removes the folder.
use_workdir() {
  work="$(mktemp -d)"
  redis_pid=""
  gateway_pid=""
  trap cleanup_workdir EXIT
}
cleanup_workdir() {
  [ -n "${gateway_pid:-}" ] && kill "$gateway_pid" 2>/dev/null
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null
  rm -rf "$work"
}

# A TCP port free on 127.0.0.1 when asked (a server started on it checks that
# it got it: see start_redis).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_redis DIR [redis-server options...]: a redis-server without
# persistence on a free loopback port, its files in DIR. Sets redis_port and
# redis_pid (the caller stops it) and returns 0 once that very server answers
# (not another process that took the port first); returns 1 with a message on
# stderr when it exits or does not answer within 10 s.
start_redis() {
  local dir="$1"
  shift
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" "$@" >/dev/null 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do
    if [ "$(redis-cli -p "$redis_port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$redis_pid" ]; then
      return 0
    fi
    kill -0 "$redis_pid" 2>/dev/null || { echo "redis-server exited (port $redis_port taken?)" >&2; return 1; }
    sleep 0.1
  done
  echo "redis-server did not start on port $redis_port" >&2
  return 1
}

# wait_gateway BASE PID LOG: waits (at most 30 s) until the `daeda serve` of
# pid PID at BASE (http://host:port) is up with its SQL worker, which builds
# its session in the background. Returns 1 with the end of LOG (its stderr)
# on stderr when the gateway exits or does not come up.
wait_gateway() {
  local base="$1" pid="$2" log="$3"
  for _ in $(seq 300); do
    if curl -sf "$base/readyz" 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if (json.load(sys.stdin).get("sql") or {}).get("worker") == "up" else 1)' 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -40 "$log" >&2; echo "daeda serve exited" >&2; return 1; }
    sleep 0.1
  done
  tail -20 "$log" >&2
  echo "the gateway (and its SQL worker) did not come up at $base" >&2
  return 1
}

#!/usr/bin/env bash
# The programs split across processes by mpirun (builds with TINYLLM_MPI): tinyllm-run's greedy
# text with 2 and 3 ranks is one process's, and tinyllm-server under `mpirun -np 2` answers a
# completion with one process's text and stops on SIGTERM.
#   tests/mpi/programs_test.sh RUN_BIN SERVER_BIN MODEL
set -euo pipefail
run=$1 server=$2 model=$3
[ -f "$model" ] || { echo "TINYLLM_SKIP: no $model (../shared/testdata)"; exit 0; }
fail() { echo "FAIL: $*" >&2; exit 1; }

generate() { "$@" -m "$model" -p "Once upon a time" -n 60 --temp 0 -t 1 2>/dev/null; }
want=$(generate "$run")
[ -n "$want" ] || fail "tinyllm-run printed nothing"
for np in 2 3; do
  got=$(generate mpirun -np "$np" "$run")
  [ "$got" = "$want" ] || { diff <(echo "$want") <(echo "$got") || true; fail "mpirun -np $np tinyllm-run: another text"; }
  echo "mpirun -np $np tinyllm-run: the same text"
done

# One completion from a server started by `$@`: the "text" of its answer. Then SIGTERM to the
# server (under mpirun, to rank 0, which then releases the other ranks: mpirun's own SIGTERM
# ends the job with status 1), which must exit with 0.
completion() {
  local out pid port body
  out=$(mktemp)
  "$@" "$server" -m "$model" --port 0 -t 1 >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    port=$(sed -n 's|.*listening on http://[^:]*:\([0-9]*\).*|\1|p' "$out")
    [ -n "$port" ] && break
    sleep 0.2
  done
  [ -n "$port" ] || { cat "$out"; kill "$pid"; fail "the server did not start"; }
  body='{"model":"'"$(basename "$model" .gguf)"'","prompt":"Once upon a time","max_tokens":40,"temperature":0}'
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "${#body}" "$body" >&3
  grep -o '"text":"[^"]*"' <&3 || true
  exec 3<&-
  local target=$pid
  local stat child comm state parent
  for stat in /proc/[0-9]*/stat; do   # mpirun's children (no procps needed)
    read -r child comm state parent _ <"$stat" 2>/dev/null || continue
    [ "$parent" = "$pid" ] || continue
    tr '\0' '\n' <"/proc/$child/environ" | grep -qx OMPI_COMM_WORLD_RANK=0 && target=$child
  done
  kill -TERM "$target"
  wait "$pid" || { cat "$out" >&2; fail "the server exited with $? after SIGTERM"; }
  rm -f "$out"
}
[ -x "$server" ] || { echo "no $server (a build without cpp-httplib): the server part is left out"; exit 0; }
want=$(completion)
[ -n "$want" ] || fail "no completion from one process"
got=$(completion mpirun -np 2)
[ "$got" = "$want" ] || fail "mpirun -np 2 tinyllm-server answered $got, one process $want"
echo "mpirun -np 2 tinyllm-server: the same completion, and a clean exit on SIGTERM"

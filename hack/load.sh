#!/usr/bin/env bash
# hack/load.sh: Gatehouse's load test. It pins the server under test on one
# CPU and the load client on another with taskset, runs the same workloads
# against the trivial always-OK baseline (hack/okserver) and against the
# sidecar (files source, LOAD_KEYS API key records), and prints a table of
# requests/s, latency percentiles and the ratio to the baseline, the
# sidecar's RSS, and one ghz run against the baseline for comparison.
#
# Usage: hack/load.sh            (full run, about 3 minutes)
#        LOAD_DURATION=3s LOAD_KEYS=1000 hack/load.sh   (quick check)
#
# Environment (defaults in brackets):
#   LOAD_WORKDIR      where binaries, fixtures and results go [mktemp -d]
#   LOAD_KEYS         API key records the sidecar loads [100000]
#   LOAD_DURATION     measured time per run [10s]
#   LOAD_WARMUP       unmeasured warm-up per run [2s]
#   LOAD_CONCURRENCY  closed-loop workers [32]
#   LOAD_CONNS        gRPC connections of the client [2]
#   LOAD_RATE         open-loop requests/s [1000]
#   SERVER_CPU, CLIENT_CPU   CPUs for the server and the client [0, 1]
#   SKIP_SIDECAR=1    baseline only;  SKIP_GHZ=1   no ghz run
#   GHZ               the ghz binary [ghz on PATH or ~/go/bin/ghz]
#
# Credentials: the fixtures' test keys and tokens stay in
# $LOAD_WORKDIR/fixtures/credentials.json (mode 0600); nothing here prints
# them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${LOAD_WORKDIR:-$(mktemp -d -t gatehouse-load.XXXXXX)}
KEYS=${LOAD_KEYS:-100000}
DURATION=${LOAD_DURATION:-10s}
WARMUP=${LOAD_WARMUP:-2s}
CONCURRENCY=${LOAD_CONCURRENCY:-32}
CONNS=${LOAD_CONNS:-2}
RATE=${LOAD_RATE:-1000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
GRPC_ADDR=127.0.0.1:19001
HTTP_ADDR=127.0.0.1:19002
PROBE_ADDR=127.0.0.1:19003
METRICS_ADDR=127.0.0.1:19004
RESULTS=$WORK/results.jsonl
GHZ=${GHZ:-$(command -v ghz || echo "$HOME/go/bin/ghz")}

mkdir -p "$WORK/bin"
SERVER_PID=
cleanup() {
	if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
}
trap cleanup EXIT

log() { printf '== %s\n' "$*" >&2; }

# wait_tcp ADDR: until something listens on ADDR (30 s at most).
wait_tcp() {
	local host=${1%:*} port=${1##*:}
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
		kill -0 "$SERVER_PID" 2>/dev/null || { log "server exited"; return 1; }
		sleep 0.1
	done
	log "nothing listens on $1"
	return 1
}

# wait_ready URL: until URL answers 200 (120 s at most: 100,000 records load).
wait_ready() {
	for _ in $(seq 1200); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		kill -0 "$SERVER_PID" 2>/dev/null || { log "server exited"; return 1; }
		sleep 0.1
	done
	log "$1 never became ready"
	return 1
}

# start LABEL CMD...: start a server pinned to SERVER_CPU.
start() {
	local label=$1
	shift
	log "starting $label on CPU $SERVER_CPU"
	taskset -c "$SERVER_CPU" "$@" >"$WORK/$label.log" 2>&1 &
	SERVER_PID=$!
}

stop() {
	cleanup
	SERVER_PID=
}

# rss LABEL WHEN: record the server's resident memory.
rss() {
	local rss hwm
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
	printf '%s %s: VmRSS %.1f MiB, VmHWM (peak) %.1f MiB\n' "$1" "$2" "$(echo "$rss/1024" | bc -l)" "$(echo "$hwm/1024" | bc -l)" | tee -a "$WORK/rss.txt" >&2
}

# load LABEL: the workloads against whatever listens on GRPC_ADDR.
load() {
	local label=$1 w
	for w in apikey jwt-cached; do
		taskset -c "$CLIENT_CPU" "$WORK/bin/loadgen" run --label "$label" --results "$RESULTS" --server-pid "$SERVER_PID" \
			--target "grpc://$GRPC_ADDR" --credentials "$WORK/fixtures/credentials.json" --workload "$w" \
			--mode closed --concurrency "$CONCURRENCY" --conns "$CONNS" --duration "$DURATION" --warmup "$WARMUP"
	done
	for w in apikey jwt-cached; do
		taskset -c "$CLIENT_CPU" "$WORK/bin/loadgen" run --label "$label" --results "$RESULTS" --server-pid "$SERVER_PID" \
			--target "grpc://$GRPC_ADDR" --credentials "$WORK/fixtures/credentials.json" --workload "$w" \
			--mode open --rate "$RATE" --concurrency 64 --conns 1 --duration "$DURATION" --warmup "$WARMUP"
	done
	# The HTTP ext_authz contract (nginx auth_request, Traefik, Envoy's
	# http_service): one closed-loop run.
	taskset -c "$CLIENT_CPU" "$WORK/bin/loadgen" run --label "$label" --results "$RESULTS" --server-pid "$SERVER_PID" \
		--target "http://$HTTP_ADDR" --credentials "$WORK/fixtures/credentials.json" --workload apikey \
		--mode closed --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP"
}

log "building into $WORK/bin"
(cd "$ROOT" && go build -o "$WORK/bin/" ./hack/loadgen ./hack/okserver)
if [[ -z ${SKIP_SIDECAR:-} ]]; then
	(cd "$ROOT" && go build -o "$WORK/bin/" ./cmd/gatehouse)
fi

if [[ ! -f $WORK/fixtures/credentials.json ]]; then
	log "writing fixtures: $KEYS API key records"
	"$WORK/bin/loadgen" fixtures --out "$WORK/fixtures" --keys "$KEYS"
fi

log "machine: $(nproc) CPUs, $(uptime)"
: >"$RESULTS"
: >"$WORK/rss.txt"

start baseline "$WORK/bin/okserver" --grpc-bind-address "$GRPC_ADDR" --http-bind-address "$HTTP_ADDR"
wait_tcp "$GRPC_ADDR"
load baseline
GHZ_LINE="ghz: skipped"
if [[ -z ${SKIP_GHZ:-} ]]; then
	if [[ -x $GHZ ]]; then
		# The same request as the apikey workload, built from the
		# credentials file into a private file: never printed.
		umask 077
		jq '{attributes: {request: {http: {method: "GET", host: .host, path: .path, scheme: "http", protocol: "HTTP/1.1",
			headers: {":authority": .host, ":method": "GET", ":path": .path, ":scheme": "http",
				accept: "application/json", "user-agent": "ghz", (.apiKeyHeader): .apiKeys[0]}}}}}' \
			"$WORK/fixtures/credentials.json" >"$WORK/ghz-request.json"
		umask 022
		log "ghz against the baseline"
		taskset -c "$CLIENT_CPU" "$GHZ" --insecure --call envoy.service.auth.v3.Authorization/Check \
			-D "$WORK/ghz-request.json" -c "$CONCURRENCY" --connections "$CONNS" -z "$DURATION" \
			"$GRPC_ADDR" >"$WORK/ghz.txt" 2>&1 || true
		GHZ_LINE="ghz (baseline, apikey request, c=$CONCURRENCY, $CONNS conns): $(awk '/Requests\/sec:/ {printf "%.0f req/s", $2}' "$WORK/ghz.txt"); $(grep -E '^\s+(50|99) % in' "$WORK/ghz.txt" | tr -s ' ' | tr '\n' ';')"
	else
		GHZ_LINE="ghz: not installed (go install github.com/bojand/ghz/cmd/ghz@v0.121.0)"
	fi
fi
stop

if [[ -z ${SKIP_SIDECAR:-} ]]; then
	start sidecar "$WORK/bin/gatehouse" sidecar --source files --config-dir "$WORK/fixtures/config" \
		--namespace loadtest --grpc-bind-address "$GRPC_ADDR" --http-bind-address "$HTTP_ADDR" \
		--health-probe-bind-address "$PROBE_ADDR" --metrics-bind-address "$METRICS_ADDR"
	wait_ready "http://$PROBE_ADDR/readyz"
	sleep 2
	rss sidecar "ready with $KEYS records, before load"
	load sidecar
	taskset -c "$CLIENT_CPU" "$WORK/bin/loadgen" run --label sidecar --results "$RESULTS" --server-pid "$SERVER_PID" \
		--target "grpc://$GRPC_ADDR" --credentials "$WORK/fixtures/credentials.json" --workload deny \
		--mode closed --concurrency "$CONCURRENCY" --conns "$CONNS" --duration "$DURATION" --warmup "$WARMUP"
	rss sidecar "after load"
	stop
fi

echo
echo "Gatehouse load test, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
"$WORK/bin/loadgen" table --results "$RESULTS"
echo
cat "$WORK/rss.txt"
echo "$GHZ_LINE"
echo "results: $RESULTS"

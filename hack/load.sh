#!/usr/bin/env bash
# hack/load.sh: Gatehouse's load test. It runs the trivial always-OK
# baseline (hack/okserver) and the sidecar (files source, LOAD_KEYS API key
# records) side by side, both pinned to SERVER_CPU with taskset, and drives
# them in turn, round after round, with the project's load client pinned to
# CLIENT_CPU. Interleaving the two servers in every round keeps the
# machine's changing load from favouring either. It prints a table of
# requests/s, latency percentiles, CPU shares and the ratio to the baseline
# of the same round, a summary over the rounds, the sidecar's RSS, and one
# ghz run against the baseline for comparison.
#
# Usage: hack/load.sh                                   (about 8 minutes)
#        LOAD_KEYS=1000 LOAD_DURATION=3s LOAD_ROUNDS=1 hack/load.sh   (quick check)
#
# Environment (defaults in brackets):
#   LOAD_WORKDIR      binaries, fixtures and results [mktemp -d]
#   LOAD_KEYS         API key records the sidecar loads [100000]
#   LOAD_ROUNDS       rounds of baseline/sidecar pairs [3]
#   LOAD_DURATION     measured time per run [10s]
#   LOAD_WARMUP       unmeasured warm-up per run [2s]
#   LOAD_CONCURRENCY  closed-loop workers [32]
#   LOAD_CONNS        gRPC connections of the client [2]
#   LOAD_RATE         open-loop requests/s [1000]
#   SERVER_CPU, CLIENT_CPU   CPUs of the servers and of the client [0, 1]
#   LOAD_NICE         run servers and client at this nice value, e.g. -10 on
#                     a shared machine, so that other work steals less of
#                     their CPUs (needs root for negative values) [unset]
#   SKIP_GHZ=1        no ghz run;  GHZ  the ghz binary [ghz on PATH, ~/go/bin/ghz]
#
# Credentials: the fixtures' test keys and tokens stay in
# $LOAD_WORKDIR/fixtures/credentials.json (mode 0600); nothing here prints
# them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${LOAD_WORKDIR:-$(mktemp -d -t gatehouse-load.XXXXXX)}
KEYS=${LOAD_KEYS:-100000}
ROUNDS=${LOAD_ROUNDS:-3}
DURATION=${LOAD_DURATION:-10s}
WARMUP=${LOAD_WARMUP:-2s}
CONCURRENCY=${LOAD_CONCURRENCY:-32}
CONNS=${LOAD_CONNS:-2}
RATE=${LOAD_RATE:-1000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
GHZ=${GHZ:-$(command -v ghz || echo "$HOME/go/bin/ghz")}
NICE=()
if [[ -n ${LOAD_NICE:-} ]]; then NICE=(nice -n "$LOAD_NICE"); fi

BASE_GRPC=127.0.0.1:19001
BASE_HTTP=127.0.0.1:19002
SIDE_GRPC=127.0.0.1:19101
SIDE_HTTP=127.0.0.1:19102
SIDE_PROBE=127.0.0.1:19103
SIDE_METRICS=127.0.0.1:19104

RESULTS=$WORK/results.jsonl
CREDS=$WORK/fixtures/credentials.json
BASE_PID=
SIDE_PID=

cleanup() {
	local pid
	for pid in $BASE_PID $SIDE_PID; do
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
}
trap cleanup EXIT

log() { printf '== %s\n' "$*" >&2; }

# wait_tcp ADDR PID: until something listens on ADDR (30 s at most).
wait_tcp() {
	local host=${1%:*} port=${1##*:}
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
		kill -0 "$2" 2>/dev/null || { log "server $2 exited"; return 1; }
		sleep 0.1
	done
	log "nothing listens on $1"
	return 1
}

# wait_ready URL PID: until URL answers 200 (300 s at most).
wait_ready() {
	for _ in $(seq 3000); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		kill -0 "$2" 2>/dev/null || { log "server $2 exited"; return 1; }
		sleep 0.1
	done
	log "$1 never became ready"
	return 1
}

# rss PID WHEN: record the resident memory of a process.
rss() {
	local rss hwm
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status")
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$1/status")
	printf 'sidecar %s: VmRSS %.1f MiB, VmHWM (peak) %.1f MiB\n' "$2" "$(echo "$rss/1024" | bc -l)" "$(echo "$hwm/1024" | bc -l)" |
		tee -a "$WORK/rss.txt" >&2
}

# run LABEL PID TARGET ROUND ARGS...: one pinned loadgen run.
run() {
	local label=$1 pid=$2 target=$3 round=$4
	shift 4
	"${NICE[@]}" taskset -c "$CLIENT_CPU" "$WORK/bin/loadgen" run --label "$label" --server-pid "$pid" --round "$round" \
		--results "$RESULTS" --credentials "$CREDS" --target "$target" --warmup "$WARMUP" --duration "$DURATION" "$@"
}

log "building into $WORK/bin"
mkdir -p "$WORK/bin"
(cd "$ROOT" && go build -o "$WORK/bin/" ./hack/loadgen ./hack/okserver ./cmd/gatehouse-sidecar)

if [[ ! -f $CREDS ]]; then
	log "writing fixtures: $KEYS API key records"
	"$WORK/bin/loadgen" fixtures --out "$WORK/fixtures" --keys "$KEYS"
fi
: >"$RESULTS"
: >"$WORK/rss.txt"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

log "starting the baseline and the sidecar on CPU $SERVER_CPU"
"${NICE[@]}" taskset -c "$SERVER_CPU" "$WORK/bin/okserver" --grpc-bind-address "$BASE_GRPC" --http-bind-address "$BASE_HTTP" \
	>"$WORK/baseline.log" 2>&1 &
BASE_PID=$!
"${NICE[@]}" taskset -c "$SERVER_CPU" "$WORK/bin/gatehouse-sidecar" --source files --config-dir "$WORK/fixtures/config" \
	--namespace loadtest --grpc-bind-address "$SIDE_GRPC" --http-bind-address "$SIDE_HTTP" \
	--health-probe-bind-address "$SIDE_PROBE" --metrics-bind-address "$SIDE_METRICS" \
	>"$WORK/sidecar.log" 2>&1 &
SIDE_PID=$!
wait_tcp "$BASE_GRPC" "$BASE_PID"
start=$(date +%s.%N)
wait_ready "http://$SIDE_PROBE/readyz" "$SIDE_PID"
log "sidecar ready after $(echo "$(date +%s.%N) - $start" | bc | cut -c1-5) s"
sleep 2
rss "$SIDE_PID" "ready with $KEYS records, before load"

for round in $(seq "$ROUNDS"); do
	log "round $round of $ROUNDS (load average $(cut -d' ' -f1 /proc/loadavg))"
	for w in apikey jwt-cached; do
		for s in baseline sidecar; do
			if [[ $s == baseline ]]; then pid=$BASE_PID addr=$BASE_GRPC; else pid=$SIDE_PID addr=$SIDE_GRPC; fi
			run "$s" "$pid" "grpc://$addr" "$round" --workload "$w" --mode closed --concurrency "$CONCURRENCY" --conns "$CONNS"
		done
	done
	for w in apikey jwt-cached; do
		for s in baseline sidecar; do
			if [[ $s == baseline ]]; then pid=$BASE_PID addr=$BASE_GRPC; else pid=$SIDE_PID addr=$SIDE_GRPC; fi
			run "$s" "$pid" "grpc://$addr" "$round" --workload "$w" --mode open --rate "$RATE" --concurrency 64 --conns 1
		done
	done
	# The HTTP ext_authz contract (nginx auth_request, Traefik, Envoy's
	# http_service).
	run baseline "$BASE_PID" "http://$BASE_HTTP" "$round" --workload apikey --mode closed --concurrency "$CONCURRENCY"
	run sidecar "$SIDE_PID" "http://$SIDE_HTTP" "$round" --workload apikey --mode closed --concurrency "$CONCURRENCY"
done
run sidecar "$SIDE_PID" "grpc://$SIDE_GRPC" 1 --workload deny --mode closed --concurrency "$CONCURRENCY" --conns "$CONNS"
rss "$SIDE_PID" "after load"

GHZ_LINE="ghz: skipped"
if [[ -z ${SKIP_GHZ:-} ]]; then
	if [[ -x $GHZ ]]; then
		# The apikey workload's request, built from the credentials file
		# into a private file: never printed.
		(
			umask 077
			jq '{attributes: {request: {http: {method: "GET", host: .host, path: .path, scheme: "http", protocol: "HTTP/1.1",
				headers: {":authority": .host, ":method": "GET", ":path": .path, ":scheme": "http",
					accept: "application/json", "user-agent": "ghz", (.apiKeyHeader): .apiKeys[0]}}}}}' \
				"$CREDS" >"$WORK/ghz-request.json"
		)
		log "ghz against the baseline"
		cpu0=$(awk '{print $14 + $15}' "/proc/$BASE_PID/stat")
		"${NICE[@]}" taskset -c "$CLIENT_CPU" "$GHZ" --insecure --call envoy.service.auth.v3.Authorization/Check \
			-D "$WORK/ghz-request.json" -c "$CONCURRENCY" --connections "$CONNS" -z "$DURATION" \
			"$BASE_GRPC" >"$WORK/ghz.txt" 2>&1 || true
		cpu1=$(awk '{print $14 + $15}' "/proc/$BASE_PID/stat")
		secs=${DURATION%s}
		GHZ_LINE="ghz v0.121.0 against the baseline (apikey request, c=$CONCURRENCY, $CONNS connections, $DURATION): $(awk '/Requests\/sec:/ {printf "%.0f req/s", $2}' "$WORK/ghz.txt"), $(awk '/ 50 % in/ {printf "p50 %s %s", $4, $5} / 99 % in/ {printf ", p99 %s %s", $4, $5}' "$WORK/ghz.txt"), baseline server CPU $(echo "($cpu1 - $cpu0) / $secs" | bc)%"
	else
		GHZ_LINE="ghz: not installed (go install github.com/bojand/ghz/cmd/ghz@v0.121.0)"
	fi
fi

echo
echo "Gatehouse load test, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
echo "servers on CPU $SERVER_CPU, client on CPU $CLIENT_CPU, $ROUNDS rounds of $WARMUP + $DURATION per run, nice ${LOAD_NICE:-0}."
echo "Load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
"$WORK/bin/loadgen" table --results "$RESULTS"
echo
cat "$WORK/rss.txt"
echo "$GHZ_LINE"
echo "results: $RESULTS"

# hack/load-churn.sh: hack/load.sh's churn mode (LOAD_MODE=churn), sourced
# by load.sh once its binaries and fixtures are built; it uses load.sh's
# settings and functions. Not run on its own.
#
# The sidecar's state comes over delta xDS, the path that matters at scale:
# `loadgen xds` serves the fixtures (every API key record, the key set and
# the policy) with the operator's own xDS server and caches (operator/xds),
# TLS from a CA made for the run and one token, pinned to CLIENT_CPU as a
# stand-in for an operator elsewhere; the sidecar runs --source=xds on
# SERVER_CPU beside the floor baseline. Each round measures, open loop at
# LOAD_RATE requests/s with the apikey workload, the baseline and then the
# sidecar while nothing changes (idle), and again while loadgen disables or
# re-enables LOAD_CHURN keys a second (never one the client sends). The
# summary is the sidecar's p99 under churn over its idle p99 (issue 13:
# within 1.3 at 100,000 keys, 10 changes/s, 1,000 requests/s).

CHURN=${LOAD_CHURN:-10}
XDS_ADDR=127.0.0.1:19301
XSIDE_GRPC=127.0.0.1:19311
XSIDE_HTTP=127.0.0.1:19312
XSIDE_PROBE=127.0.0.1:19313
XSIDE_METRICS=127.0.0.1:19314
CHURN_IDLE=$WORK/churn-idle.jsonl
CHURN_BUSY=$WORK/churn-busy.jsonl
: >"$CHURN_IDLE"
: >"$CHURN_BUSY"
: >"$WORK/rss.txt"

log "serving $KEYS API key records over delta xDS on CPU $CLIENT_CPU"
"${NICE[@]}" taskset -c "$CLIENT_CPU" "$WORK/bin/loadgen" xds --config "$WORK/fixtures/config" --credentials "$CREDS" \
	--out "$WORK/xds" --listen "$XDS_ADDR" --churn "$CHURN" >"$WORK/xds.out" 2>"$WORK/xds.log" &
XDS_PID=$!
wait_tcp "$XDS_ADDR" "$XDS_PID"

log "starting the baseline and the xDS sidecar on CPU $SERVER_CPU"
start_baseline
start_sidecar sidecar-xds XSIDE --source xds --xds-address "$XDS_ADDR" \
	--xds-ca-file "$WORK/xds/ca.pem" --xds-token-file "$WORK/xds/token"
sleep 2
rss "$XSIDE_PID" "(xDS) ready with $KEYS records, before load"

# churn_pair ROUND: the baseline, then the xDS sidecar, open loop.
churn_pair() {
	run baseline "$BASE_PID" "grpc://$BASE_GRPC" "$1" --workload apikey --expect-allow --mode open --rate "$RATE" --concurrency 64 --conns 1
	run sidecar-xds "$XSIDE_PID" "grpc://$XSIDE_GRPC" "$1" --workload apikey --mode open --rate "$RATE" --concurrency 64 --conns 1
}

# churn_periods: how many churn periods loadgen xds has reported.
churn_periods() { grep -c '^churn:' "$WORK/xds.out" || true; }

for round in $(seq "$ROUNDS"); do
	log "round $round of $ROUNDS (load average $(cut -d' ' -f1 /proc/loadavg)): idle"
	RESULTS=$CHURN_IDLE churn_pair "$round"
	log "round $round: $CHURN key changes a second"
	periods=$(churn_periods)
	kill -USR1 "$XDS_PID"
	RESULTS=$CHURN_BUSY churn_pair "$round"
	kill -USR2 "$XDS_PID"
	for _ in $(seq 100); do
		[[ $(churn_periods) -gt $periods ]] && break
		sleep 0.1
	done
	log "$(tail -n 1 "$WORK/xds.out")"
done
rss "$XSIDE_PID" "(xDS) after load"

# median_p99 FILE LABEL: the median p99 of LABEL's runs in FILE, in µs.
median_p99() {
	jq -s --arg l "$2" '[.[] | select(.label == $l) | .latency.p99] | sort |
		if length == 0 then 0 elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end / 1000' "$1"
}
ratio() { if [[ $(echo "$2 > 0" | bc) == 1 ]]; then printf '%.2f' "$(echo "scale=4; $1 / $2" | bc)"; else echo "—"; fi; }

side_idle=$(median_p99 "$CHURN_IDLE" sidecar-xds)
side_busy=$(median_p99 "$CHURN_BUSY" sidecar-xds)
base_idle=$(median_p99 "$CHURN_IDLE" baseline)
base_busy=$(median_p99 "$CHURN_BUSY" baseline)

echo
echo "Gatehouse load test, churn mode, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
echo "servers on CPU $SERVER_CPU, client and xDS server on CPU $CLIENT_CPU, $ROUNDS rounds of $WARMUP + $DURATION per run, nice ${LOAD_NICE:-0},"
echo "$KEYS API key records over delta xDS, open loop at $RATE requests/s, $CHURN key changes a second while churning."
echo "Load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "Idle (no change):"
"$WORK/bin/loadgen" table --results "$CHURN_IDLE"
echo
echo "Churn ($CHURN key changes a second):"
"$WORK/bin/loadgen" table --results "$CHURN_BUSY"
echo
grep '^churn:' "$WORK/xds.out" || true
cat "$WORK/rss.txt"
printf 'median p99, idle → churn: sidecar-xds %.0f → %.0f µs (churn / idle %s); baseline %.0f → %.0f µs (%s)\n' \
	"$side_idle" "$side_busy" "$(ratio "$side_busy" "$side_idle")" "$base_idle" "$base_busy" "$(ratio "$base_busy" "$base_idle")"
echo "results: $CHURN_IDLE $CHURN_BUSY"

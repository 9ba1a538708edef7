#!/usr/bin/env bash
# hack/rss.sh: the sidecar's resident memory once it is ready, from
# /proc/PID/status: VmRSS (all resident pages), RssFile (resident pages of
# mapped files, almost all the executable) and RssAnon (heap, stacks).
# For each key count it writes the load test's fixtures (hack/loadgen
# fixtures), starts the sidecar with --source files on them, waits for
# /readyz, lets the post-load collection and FreeOSMemory run, and reads
# the figures. Each key count is measured RSS_RUNS times; the table shows
# every run.
#
# The sidecar is built as the Dockerfile builds it (-tags grpcnotrace).
#
# Usage: hack/rss.sh                         this tree's gatehouse-sidecar
#        RSS_OLD_REF=b99fd68 hack/rss.sh     also the sidecar built at that
#                                            commit (gatehouse-sidecar, or
#                                            `gatehouse sidecar` before the
#                                            split), on fixtures written by
#                                            that commit's hack/loadgen when
#                                            it has one
#
# Environment (defaults in brackets):
#   RSS_WORKDIR   binaries and fixtures [mktemp -d]
#   RSS_KEYS      key counts [1000 100000]
#   RSS_RUNS      runs per binary and key count [3]
#   RSS_SETTLE    seconds between ready and reading the figures [3]
#   RSS_OLD_REF   a commit with cmd/gatehouse-sidecar, or whose cmd/gatehouse
#                 has the `sidecar` command [unset]
#
# Nothing here prints a credential: the fixtures' keys stay in
# $RSS_WORKDIR/fixtures-N/credentials.json (mode 0600).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${RSS_WORKDIR:-$(mktemp -d -t gatehouse-rss.XXXXXX)}
read -r -a KEYS <<<"${RSS_KEYS:-1000 100000}"
RUNS=${RSS_RUNS:-3}
SETTLE=${RSS_SETTLE:-3}
OLD_REF=${RSS_OLD_REF:-}

GRPC=127.0.0.1:19201
HTTP=127.0.0.1:19202
PROBE=127.0.0.1:19203
METRICS=127.0.0.1:19204

PID=
cleanup() {
	if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
		kill "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	if [[ -n $OLD_REF && -d $WORK/old-src ]]; then
		git -C "$ROOT" worktree remove --force "$WORK/old-src" >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT

log() { printf '== %s\n' "$*" >&2; }

# wait_ready URL PID: until URL answers 200 (300 s at most).
wait_ready() {
	for _ in $(seq 3000); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		kill -0 "$2" 2>/dev/null || { log "sidecar $2 exited"; return 1; }
		sleep 0.1
	done
	log "$1 never became ready"
	return 1
}

# mib FIELD PID: a /proc/PID/status field in MiB.
mib() { awk -v f="$1:" '$1 == f {printf "%.1f", $2/1024}' "/proc/$2/status"; }

mkdir -p "$WORK/bin"
log "building gatehouse-sidecar and loadgen (this tree) into $WORK/bin"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o "$WORK/bin/" ./cmd/gatehouse-sidecar ./hack/loadgen)
BINARIES=("new:$WORK/bin/gatehouse-sidecar")
if [[ -n $OLD_REF ]]; then
	git -C "$ROOT" worktree add --detach "$WORK/old-src" "$OLD_REF" >/dev/null 2>&1
	mkdir -p "$WORK/old-bin"
	if [[ -d $WORK/old-src/cmd/gatehouse-sidecar ]]; then
		log "building gatehouse-sidecar at $OLD_REF into $WORK/old-bin"
		(cd "$WORK/old-src" && CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o "$WORK/old-bin/" ./cmd/gatehouse-sidecar)
		BINARIES=("old:$WORK/old-bin/gatehouse-sidecar" "${BINARIES[@]}")
	else
		log "building gatehouse at $OLD_REF (single binary) into $WORK/old-bin"
		(cd "$WORK/old-src" && CGO_ENABLED=0 go build -trimpath -o "$WORK/old-bin/gatehouse" ./cmd/gatehouse)
		BINARIES=("old:$WORK/old-bin/gatehouse sidecar" "${BINARIES[@]}")
	fi
	# The state format may differ between the two (record ConfigMaps
	# before APIKey status): the old binary reads fixtures its own loadgen
	# wrote, when it has one at hack/loadgen.
	if [[ -d $WORK/old-src/hack/loadgen ]]; then
		(cd "$WORK/old-src" && CGO_ENABLED=0 go build -trimpath -o "$WORK/old-bin/" ./hack/loadgen)
	fi
fi

printf '%-6s %-8s %-4s %-12s %-10s %-12s %-10s\n' binary keys run 'VmRSS MiB' 'RssFile' 'RssAnon' 'VmHWM'
for n in "${KEYS[@]}"; do
	for entry in "${BINARIES[@]}"; do
		label=${entry%%:*}
		read -r -a cmd <<<"${entry#*:}"
		gen=$WORK/bin/loadgen fixtures=$WORK/fixtures-$n
		if [[ $label == old && -x $WORK/old-bin/loadgen ]]; then
			gen=$WORK/old-bin/loadgen fixtures=$WORK/fixtures-old-$n
		fi
		if [[ ! -d $fixtures/config ]]; then
			log "writing fixtures ($label): $n API keys"
			"$gen" fixtures --out "$fixtures" --keys "$n" >/dev/null
		fi
		for run in $(seq "$RUNS"); do
			"${cmd[@]}" --source files --config-dir "$fixtures/config" --namespace loadtest \
				--grpc-bind-address "$GRPC" --http-bind-address "$HTTP" \
				--health-probe-bind-address "$PROBE" --metrics-bind-address "$METRICS" \
				>"$WORK/$label-$n-$run.log" 2>&1 &
			PID=$!
			wait_ready "http://$PROBE/readyz" "$PID"
			sleep "$SETTLE"
			printf '%-6s %-8s %-4s %-12s %-10s %-12s %-10s\n' "$label" "$n" "$run" \
				"$(mib VmRSS "$PID")" "$(mib RssFile "$PID")" "$(mib RssAnon "$PID")" "$(mib VmHWM "$PID")"
			kill "$PID"
			wait "$PID" 2>/dev/null || true
			PID=
		done
	done
done
log "binaries and fixtures: $WORK"

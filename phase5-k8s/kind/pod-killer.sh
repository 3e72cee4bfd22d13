#!/usr/bin/env bash
# Kills a random replica of a Deployment again and again and measures how long the
# Deployment takes to have every replica available again. Fails (exit 1) when one
# recovery takes longer than the limit: the brief's reference pipeline allows 30 s;
# FerrisEats aims at 10 s.
#
#     phase5-k8s/kind/pod-killer.sh [DEPLOYMENT] [ROUNDS] [LIMIT_SECONDS]
#     phase5-k8s/kind/pod-killer.sh order 5 30
set -euo pipefail

deployment="${1:-order}"
rounds="${2:-5}"
limit="${3:-30}"
namespace=ferriseats

available() {
    kubectl -n "${namespace}" get deployment "${deployment}" \
        -o jsonpath='{.status.availableReplicas}/{.spec.replicas}'
}

worst=0
for round in $(seq 1 "${rounds}"); do
    mapfile -t pods < <(kubectl -n "${namespace}" get pods \
        -l "app.kubernetes.io/name=${deployment}" -o name)
    victim="${pods[RANDOM % ${#pods[@]}]}"
    started=$(date +%s)
    # No grace: a crash, not a polite stop.
    kubectl -n "${namespace}" delete "${victim}" --grace-period=0 --force --wait=false > /dev/null 2>&1
    sleep 1
    until [[ "$(available)" =~ ^([0-9]+)/([0-9]+)$ ]] && [[ "${BASH_REMATCH[1]}" == "${BASH_REMATCH[2]}" ]]; do
        if (( $(date +%s) - started > limit * 2 )); then
            break
        fi
        sleep 1
    done
    took=$(( $(date +%s) - started ))
    (( took > worst )) && worst=${took}
    echo "round ${round}: killed ${victim}, all replicas available again after ${took} s"
done

echo "pod-killer: worst recovery ${worst} s (limit ${limit} s)"
if (( worst > limit )); then
    echo "pod-killer: FAIL — a recovery took longer than ${limit} s" >&2
    exit 1
fi

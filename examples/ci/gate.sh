#!/usr/bin/env bash
# Build the engine family, measure every configuration's accuracy, write the report, and
# gate on a baseline: exit 1 when any configuration lost more than MAX_DROP points of
# top-1 (or is missing), with JUnit XML for the CI's test view.
#
#   examples/ci/gate.sh OUT BASELINE [adaexport build options...]
#
# OUT       the build directory (kept between runs, it is also the build cache)
# BASELINE  a build directory or manifest.json with accuracies; "none" to skip the gate
#           (the first run: keep OUT/manifest.json as the baseline for the next ones)
# Environment: ADAEXPORT (the command, default adaexport), DATASET (default demo),
#              LIMIT (evaluate on the first N samples), MAX_DROP (points, default 0.5).
set -euo pipefail

out=${1:?usage: gate.sh OUT BASELINE [build options...]}
baseline=${2:?usage: gate.sh OUT BASELINE [build options...]}
shift 2
read -r -a adaexport <<< "${ADAEXPORT:-adaexport}"

"${adaexport[@]}" build --out "$out" "$@"
"${adaexport[@]}" eval "$out" --dataset "${DATASET:-demo}" ${LIMIT:+--limit "$LIMIT"}
"${adaexport[@]}" report "$out" --out "$out/report"

if [ "$baseline" = none ]; then
    echo "no baseline given: not gating (use $out/manifest.json as the next run's baseline)"
    exit 0
fi
"${adaexport[@]}" check "$out" --baseline "$baseline" --max-drop "${MAX_DROP:-0.5}" \
    --junit "$out/accuracy-junit.xml"

#!/usr/bin/env bash
# Run the chaos test (2000 frames, 3 workers, one SIGKILLed every 100 frames and replaced)
# N times in a row (default 10); every run must pass. One JSON line of measurements per run
# (frames lost, duplicates dropped, re-dispatches, time for the sink and the ventilator to
# name a dead worker, frames/s before and during the failures) goes to the report file.
#
#   scripts/chaos-loop.sh [N] [REPORT]     (default: 10, chaos-report.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
report="${2:-chaos-report.jsonl}"
: > "$report"
report="$(realpath "$report")"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export FRAMEPIPE_CHAOS_REPORT="$report"
base="$(mktemp -d -t framepipe-chaos-XXXXXX)"
trap 'rm -rf "$base"' EXIT
for i in $(seq 1 "$runs"); do
    echo "== chaos run $i/$runs"
    python -m pytest tests/integration/test_chaos.py::test_chaos_sigkill_a_worker_every_100_frames \
        -q -p no:cacheprovider --basetemp="$base/run$i"
done
python - "$report" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
det = sorted(v for r in rows for v in r["detect_sink_s"])
vdet = sorted(v for r in rows for v in r["detect_ventilator_s"])
print(f"runs {len(rows)}, frames {sum(r['frames'] for r in rows)}, kills {sum(r['kills'] for r in rows)}")
print(f"lost {sum(r['lost'] for r in rows)}, duplicates dropped {sum(r['duplicates_dropped'] for r in rows)}, "
      f"re-dispatched {sum(r['redispatched'] for r in rows)}")
print(f"dead worker named by the sink after: median {statistics.median(det):.2f} s, max {max(det):.2f} s "
      f"({len(det)} detections); by the ventilator: median {statistics.median(vdet):.2f} s, max {max(vdet):.2f} s")
a = [r["fps_no_failure"] for r in rows]
b = [r["fps_with_failures"] for r in rows]
print(f"frames/s without failures: median {statistics.median(a):.0f} (min {min(a):.0f}, max {max(a):.0f}); "
      f"with a SIGKILL every 100 frames: median {statistics.median(b):.0f} (min {min(b):.0f}, max {max(b):.0f})")
PY

"""Summarises result lines of ops/bench/pipeline and ops/bench/svix (their --json files):
per system and scenario, the runs' min / median / max throughput, latency percentiles
and CPU per event by process, as Markdown for docs/BENCHMARKS.md.

    python3 ops/bench/summary.py hookline.jsonl svix.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def spread(values: list[float]) -> str:
    values = sorted(values)
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{values[0]:,.0f} / {statistics.median(values):,.0f} / {values[-1]:,.0f}"


def main(paths: list[str]) -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    groups[(r.get("system", "hookline"), r["scenario"])].append(r)
    print(
        "| system | scenario | runs | deliveries/s (min / median / max) | events/s (median) "
        "| latency p50 / p99 / max ms (median run) | lost | dup | busy | CPU ms per event |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (system, scenario), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        runs.sort(key=lambda r: r["deliveries_per_s"])
        mid = runs[len(runs) // 2]
        lat = mid["latency_ms"]
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in mid["cpu_ms_per_event"].items())
        rates = spread([r["deliveries_per_s"] for r in runs])
        print(
            f"| {system} | {scenario} | {len(runs)} | {rates} "
            f"| {mid['events_per_s']:,.0f} | {lat['p50']} / {lat['p99']} / {lat['max']} "
            f"| {sum(r['lost'] for r in runs)} | {sum(r['duplicates'] for r in runs)} "
            f"| {mid['machine_busy']:.0%} | {cpu} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

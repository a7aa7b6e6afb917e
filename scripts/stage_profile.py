"""Wall time and peak RSS of every stage of a DAG, one `dvc repro --single-item` at a time.

    python scripts/stage_profile.py [--profile smollm2] [--out reports/stage_profile.md]

Run in a copy of the project (it reproduces every stage, forced): each stage gets its own child
process, so the peak RSS printed is that stage's own (the largest of dvc and the stage's command),
not the pipeline's. The order is dvc's own (`dvc repro --dry`)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path


def stages_in_order() -> list[str]:
    # `dvc repro --dry` prints "Running stage 'X'" in execution order without running anything
    dry = subprocess.run(["dvc", "repro", "--dry", "--force"], capture_output=True, text=True, check=True).stdout
    return re.findall(r"Running stage '([^']+)'", dry)


def profile_stage(stage: str) -> dict:
    started = time.perf_counter()
    # a fresh python per stage: RUSAGE_CHILDREN then holds that stage's processes only
    probe = ("import resource, subprocess, sys, json; code = subprocess.call(['dvc', 'repro', '--force', "
             "'--single-item', sys.argv[1]]); print(json.dumps({'code': code, 'maxrss_kb': "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, stage], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    if result["code"] != 0:
        sys.exit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
    return {"stage": stage, "wall_s": time.perf_counter() - started, "peak_rss_mb": result["maxrss_kb"] / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="a file of profiles/, applied first (iwsft profile NAME)")
    parser.add_argument("--out", type=Path, default=Path("reports/stage_profile.md"))
    args = parser.parse_args()
    if args.profile:
        subprocess.run(["iwsft", "profile", args.profile], check=True)
    rows = [profile_stage(stage) for stage in stages_in_order()]
    lines = ["| stage | wall (s) | peak RSS (MB) |", "|---|---:|---:|"]
    lines += [f"| {r['stage']} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} |" for r in rows]
    lines.append(f"| **total** | {sum(r['wall_s'] for r in rows):.1f} | {max(r['peak_rss_mb'] for r in rows):.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

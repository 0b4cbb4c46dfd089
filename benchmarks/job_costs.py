"""Where a finished run spent its time: jobs, summed job wall time and peak memory per rule.

Reads the `benchmark:` files every rule writes (results/benchmarks/<rule>/...tsv).
Run after a workflow: ``python benchmarks/job_costs.py [results_dir]``.
"""

import sys
from pathlib import Path

import pandas as pd


def job_costs(results: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        table = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": rule, "seconds": float(table["s"].iloc[-1]), "max_rss_mb": float(table["max_rss"].iloc[-1])})
    if not rows:
        raise SystemExit(f"{results}/benchmarks: no benchmark files; run the workflow first")
    frame = pd.DataFrame(rows)
    per_rule = frame.groupby("rule").agg(jobs=("seconds", "size"), summed_s=("seconds", "sum"),
                                         mean_s=("seconds", "mean"), peak_rss_mb=("max_rss_mb", "max"))
    total = pd.DataFrame([{"jobs": len(frame), "summed_s": frame["seconds"].sum(), "mean_s": frame["seconds"].mean(),
                           "peak_rss_mb": frame["max_rss_mb"].max()}], index=["total"])
    return pd.concat([per_rule.sort_values("summed_s", ascending=False), total]).round(1)


if __name__ == "__main__":
    print(job_costs(Path(sys.argv[1] if len(sys.argv) > 1 else "results")).to_string())

"""advseg publish: a finished run's generated results as a docs page, with how it was made.

Results in the docs come from a run, never by hand: this copies a run's claims page, size
table and figures into one markdown page and heads it with the run's provenance (config,
when it ran and how long, the machine, the code's commit, the command that regenerates it).
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
from pathlib import Path

FIGURES = ("param_size_correlation.png", "dice_vs_eps.png")   # the default figures, under the run's plots/


def add_arguments(parser) -> None:
    parser.add_argument("--results", type=Path, required=True, help="the run's results_dir (holds claims.md)")
    parser.add_argument("--config", type=Path, required=True, help="the --configfile the run used")
    parser.add_argument("--title", required=True, help="the page's title")
    parser.add_argument("--intro", default="",
                        help="a paragraph above the results (no numbers: those come from the run)")
    parser.add_argument("--tables", nargs="+", default=["size.md"],
                        help="the run's tables/*.md to include after the claims, in order (default: size.md)")
    parser.add_argument("--figures", nargs="+", default=list(FIGURES),
                        help=f"the run's plots/*.png to show after the claims (default: {' '.join(FIGURES)})")
    parser.add_argument("--out", type=Path, required=True, help="the page to write, e.g. docs/zoo.md")


def run(args) -> None:
    from advseg.jobs import atomic_path

    sources = {"claims": args.results / "claims.md", **{name: args.results / "tables" / name for name in args.tables}}
    for path in [*sources.values(), *(args.results / "plots" / name for name in args.figures), args.config]:
        if not path.is_file():
            raise ValueError(f"{path}: missing; run the workflow with --configfile {args.config} first")
    stem = args.out.stem
    page = page_text(args, {name: path.read_text() for name, path in sources.items()}, stem)  # before any write
    images = args.out.parent / "img"
    images.mkdir(parents=True, exist_ok=True)
    for name in args.figures:
        shutil.copyfile(args.results / "plots" / name, images / f"{stem}-{name}")
    with atomic_path(args.out) as temporary:
        temporary.write_text(page, encoding="utf-8")


def page_text(args, sources: dict[str, str], stem: str) -> str:
    started, finished, busy, job_seconds, jobs = run_span(args.results)
    lines = [f"# {args.title}", ""]
    if args.intro:
        lines += [args.intro, ""]
    lines += [
        "Everything below is generated from a run by `advseg publish`; nothing there was typed by hand.", "",
        "| | |", "|---|---|",
        f"| config | `{args.config}` |",
        f"| ran | {started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC, jobs running for "
        f"{_duration(datetime.timedelta(seconds=busy))} of it; {jobs} jobs, {job_seconds / 60:.0f} min of job time |",
        f"| machine | {machine()} |",
        f"| code | report written by advseg at commit `{commit()}` |",
        f"| regenerate | `snakemake --cores {os.cpu_count()} --configfile {args.config}`, then `advseg publish "
        f"--results {args.results} --config {args.config} --title \"{args.title}\" --tables {' '.join(args.tables)} "
        f"--figures {' '.join(args.figures)} --out {args.out}` |",
        "",
        *_demoted(sources["claims"]), "",
        *(f"![{Path(name).stem}](img/{stem}-{name})\n" for name in args.figures),
    ]
    for name in args.tables:
        lines += [*_demoted(sources[name]), ""]
    return "\n".join(lines).rstrip() + "\n"


def run_span(results: Path) -> tuple[datetime.datetime, datetime.datetime, float, float, int]:
    """When the run's first job started and its last ended, how long some job was running in
    between (a run stopped and resumed later has gaps), its jobs' summed seconds and their number.

    Snakemake writes one benchmark file per job (``benchmarks/**/*.tsv``: its first column is
    the job's wall seconds) when the job ends.
    """
    benchmarks = sorted(Path(results, "benchmarks").rglob("*.tsv"))
    if not benchmarks:
        raise ValueError(f"{results}/benchmarks: no job benchmarks; is this a results_dir of the workflow?")
    intervals = []
    for path in benchmarks:
        took = float(path.read_text().splitlines()[1].split("\t")[0])
        end = path.stat().st_mtime
        intervals.append((end - took, end))
    busy, reached = 0.0, -float("inf")
    for start, end in sorted(intervals):
        busy += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    utc = datetime.timezone.utc
    return (datetime.datetime.fromtimestamp(min(s for s, _ in intervals), utc),
            datetime.datetime.fromtimestamp(max(e for _, e in intervals), utc), busy,
            sum(e - s for s, e in intervals), len(intervals))


def machine() -> str:
    import torch

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{_cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB, {device}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def commit() -> str:
    """The checkout's commit, marked when the working tree has changes of its own."""
    try:
        found = subprocess.run(["git", "describe", "--always", "--dirty=+changes"], capture_output=True, text=True,
                               check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return found.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _duration(delta: datetime.timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _demoted(markdown: str) -> list[str]:
    """The page's headings one level down, so that it sits under this page's title."""
    return [("#" + line) if line.startswith("#") else line for line in markdown.splitlines()]

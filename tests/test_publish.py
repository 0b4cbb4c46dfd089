"""advseg publish: a run's generated pages become a docs page, headed by how the run was made."""

from __future__ import annotations

import os
import re
from argparse import Namespace
from pathlib import Path

import pytest

from advseg.commands import publish


def fake_run(results):
    (results / "tables").mkdir(parents=True)
    (results / "plots").mkdir()
    (results / "claims.md").write_text("# What this run's data say\n\n- **Independent units:** case; n = 9\n")
    (results / "tables" / "size.md").write_text("# Does model size predict attack success?\n\n| a | b |\n")
    for name in publish.FIGURES:
        (results / "plots" / name).write_bytes(b"\x89PNG fake")
    jobs = {"train/a": (100.0, 1_000_000_600), "train/b": (50.0, 1_000_000_580), "attack/a": (30.0, 1_000_000_900)}
    for job, (seconds, end) in jobs.items():
        path = results / "benchmarks" / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\n{seconds}\t0:00:00\n")
        os.utime(path, (end, end))


def test_page_holds_the_runs_pages_and_its_provenance(tmp_path):
    results, config = tmp_path / "results", tmp_path / "zoo.yaml"
    fake_run(results)
    config.write_text("results_dir: results\n")
    out = tmp_path / "docs" / "zoo.md"
    publish.run(Namespace(results=results, config=config, title="The zoo", intro="Why a zoo.", tables=["size.md"],
                          figures=list(publish.FIGURES), out=out))
    page = out.read_text()
    assert page.startswith("# The zoo\n\nWhy a zoo.")
    # jobs ran 500-600 (b inside it) and 870-900: 130 s busy between 01:55 and 02:01, 180 s of job time
    assert "| ran | 2001-09-09 01:55 to 02:01 UTC, jobs running for 2 min of it; 3 jobs, 3 min of job time |" in page
    assert "## What this run's data say" in page and "**Independent units:** case; n = 9" in page
    assert "## Does model size predict attack success?" in page
    assert page.index("## What this run's data say") < page.index("## Does model size predict")
    assert "![param_size_correlation](img/zoo-param_size_correlation.png)" in page
    assert (tmp_path / "docs" / "img" / "zoo-dice_vs_eps.png").read_bytes().startswith(b"\x89PNG")
    assert f"--configfile {config}" in page and "| machine |" in page and "| code | report written by advseg at commit" in page


def test_a_run_that_did_not_finish_is_named(tmp_path):
    results, config = tmp_path / "results", tmp_path / "zoo.yaml"
    fake_run(results)
    config.write_text("results_dir: results\n")
    (results / "claims.md").unlink()
    out = tmp_path / "docs" / "zoo.md"
    with pytest.raises(ValueError, match=re.escape(str(results / "claims.md")) + ": missing"):
        publish.run(Namespace(results=results, config=config, title="t", intro="", tables=["size.md"],
                              figures=list(publish.FIGURES), out=out))
    assert not out.exists()


def test_the_readme_quotes_the_zoos_generated_verdict():
    """The README's one result sentence is the zoo page's verdict, word for word."""
    root = Path(__file__).resolve().parents[1]
    quoted = re.search(r'"susceptibility is unrelated to model size", quoted from that page.*?\*\*(.+?)\*\*',
                       (root / "README.md").read_text(), re.S)
    assert quoted, "README: the zoo verdict sentence is gone"
    verdicts = [line for line in (root / "docs/zoo.md").read_text().splitlines()
                if line.startswith("| Susceptibility is unrelated to model size |")]
    assert verdicts and verdicts[0].split(" | ")[1] == quoted.group(1)

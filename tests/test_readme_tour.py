"""The README's tour, run as written: every line of its bash block in a fresh folder (with the
repository's venv, docs and results linked in), one torch thread, and the numbers its comments
promise checked against what the commands wrote. A README edit that changes a command or a number
without the other fails here."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.notebook, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent


def tour_lines() -> list[tuple[str, str]]:
    """(command, comment) of each line of the README's tour block."""
    text = (REPO / "README.md").read_text()
    section = text.split("## A tour", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's tour has no bash block"
    lines = []
    for line in block.group(1).splitlines():
        command, _, comment = line.partition("  # ")
        if command.strip():
            lines.append((command.strip(), comment.strip()))
    return lines


def _numbers(comment: str) -> list[float]:
    found = re.search(r"NDCG@20 ([0-9., ]+)", comment)
    assert found, comment
    return [float(x) for x in found.group(1).replace(" ", "").strip(",").split(",") if x]


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """Run every line; return {command word: (command, comment, completed process)} and the folder."""
    folder = tmp_path_factory.mktemp("tour")
    for name in (".venv", "docs", "results"):
        (folder / name).symlink_to(REPO / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PMTREC_RUNS_DIR", None)
    env["PMTREC_RUNS_DIR"] = str(folder / "run-cache")  # the report's run cache, not the checkout's
    done = {}
    for command, comment in tour_lines():
        proc = subprocess.run(shlex.split(command), cwd=folder, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        key = " ".join(shlex.split(command)[1:3])
        done[key] = (command, comment, proc)
    return done, folder


def test_the_tour_is_short_and_on_the_embedded_dataset():
    lines = tour_lines()
    assert 6 <= len(lines) <= 12
    assert all(cmd.startswith(".venv/bin/") for cmd, _ in lines)
    assert not any("--data-dir" in cmd for cmd, _ in lines)  # it needs no real dataset


def test_datasets_and_methods_print_what_the_comments_say(tour):
    done, _ = tour
    listed = done["datasets list"][2].stdout
    rows = [ln for ln in listed.splitlines()[2:] if ln.strip()]
    assert len(rows) == int(re.match(r"(\d+) datasets", done["datasets list"][1]).group(1))
    assert "embedded" in listed
    info = done["datasets info"][2].stdout
    for key, value in (("users", 943), ("items", 1349), ("interactions", 99287)):
        assert f"{key}: {value}" in info.split("processed:")[1]
    assert "943 users, 1,349 items, 99,287 pairs" in done["datasets info"][1]
    tasks = info.split("tasks:")[1].strip().splitlines()[1:]
    assert len(tasks) == int(re.search(r"(\d+) auxiliary tasks", done["datasets info"][1]).group(1))
    methods = done["methods"][2].stdout
    assert len(re.findall(r"^\S+\s+baseline\s", methods, re.M)) == 16


def test_train_and_evaluate_give_the_promised_test_ndcg(tour):
    done, folder = tour
    command, comment, _ = done["train --set"]
    out = folder / shlex.split(command)[shlex.split(command).index("--out") + 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert round(metrics["test"]["ndcg@20"], 4) == _numbers(comment)[0]
    evaluated = json.loads(done["evaluate runs/tour-pmtrec"][2].stdout)
    assert evaluated["ndcg@20"] == pytest.approx(metrics["test"]["ndcg@20"], abs=1e-12)


def test_the_tour_grid_gives_the_promised_table(tour):
    done, folder = tour
    command, comment, _ = done["compare --grid"]
    out = folder / shlex.split(command)[shlex.split(command).index("--out") + 1]
    summary = pd.read_csv(out / "summary.csv").set_index("method")
    expected = _numbers(comment)
    for method, value in zip(["single-task", "ew", "pmtrec"], expected, strict=True):
        assert round(summary.loc[method, "ndcg20_mean"], 4) == value, method
    # the grid's PMTRec run is the tour's `train` run: same settings, same number
    assert expected[2] == _numbers(done["train --set"][1])[0]


def test_the_report_page_and_the_verdicts(tour):
    done, folder = tour
    command, _, _ = done["report --notebooks"]
    out = folder / shlex.split(command)[shlex.split(command).index("--out") + 1]
    index = json.loads((out / "index.json").read_text())
    assert [e["name"] for e in index["entries"]] == ["01_train_and_evaluate"]
    assert index["entries"][0]["status"] == "ok"
    verdicts = done["-m pmtrec_lab.compare.hypotheses"][2].stdout
    assert "{'H1': 'fails', 'H2': 'fails', 'H3': 'fails'}" in verdicts
    assert "H1, H2 and H3 fail" in done["-m pmtrec_lab.compare.hypotheses"][1]

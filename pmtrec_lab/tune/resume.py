"""Resuming an interrupted tuning unit by replaying its finished trials.

While a unit runs, every trial that finishes (ASHA stopped it, or it ran its epochs) is appended
to ``<out>/<dataset>/<method>/trials.partial.jsonl``: one JSON line per trial with its number
(in start order), its sampled configuration, every report it made (the dicts the trainable
passed to ``tune.report``, in order) and whether ASHA stopped it early. The file is rewritten
atomically per trial (``write_text_atomic``), so a killed driver leaves it whole. Errored trials
are not recorded: they are trained again on a rerun.

On a rerun (same budget: ``study.yaml`` checks it) the seeded TPE sampler proposes the same
configurations in the same order as long as it sees the same results. ``replaying_searcher``
compares each proposal with the recorded trial of that number (canonical JSON, exact) and, when
equal, marks the configuration with ``REPLAY_KEY``; the trainable (``trial.run_trial``) then
reports the recorded sequence instantly instead of training, ASHA stops it where it stopped
before, and the study goes on exactly as the uninterrupted one would. A proposal that differs
from the record (the code or the search space changed) ends the study with one error line
naming the file: it is never silently mixed with new trials. The file is removed once the
unit's ``trials.csv`` and ``best.yaml`` are written (``best.yaml`` marks the unit done).

Replay needs ``--concurrent 1`` (with more trials at a time the order of results, and so the
study, is not reproducible); with more, no partial file is written or read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmtrec_lab.errors import ConfigError, PmtrecError
from pmtrec_lab.paths import write_text_atomic

__all__ = [
    "PARTIAL_FILE",
    "REPLAY_KEY",
    "STOP_AFTER_ENV",
    "Journal",
    "RecordedTrial",
    "StudyInterrupted",
    "append_partial",
    "canonical",
    "read_partial",
    "replaying_searcher",
]

#: the finished trials of a unit that has not finished yet (beside ``trials.csv``)
PARTIAL_FILE = "trials.partial.jsonl"
#: the configuration key telling the trainable which recorded trial to replay (not a setting)
REPLAY_KEY = "_pmtrec_replay"
#: test-only: ``PMTREC_TEST_TUNE_STOP_AFTER=N`` ends each unit's study after N finished trials, as
#: an interruption would (the unit is left unfinished, its partial file kept)
STOP_AFTER_ENV = "PMTREC_TEST_TUNE_STOP_AFTER"


class StudyInterrupted(PmtrecError):
    """A unit's study ended before all its trials did; its finished trials are kept for a rerun."""


@dataclass(frozen=True)
class RecordedTrial:
    """One finished trial: its number (1-based, start order), sampled configuration, reports in
    order, and whether ASHA stopped it before ``max_epochs``."""

    trial: int
    config: dict[str, Any]
    reports: list[dict[str, Any]]
    stopped_early: bool

    def line(self) -> str:
        """The trial as one JSON line (NaN written as ``NaN``, which ``json`` reads back)."""
        return json.dumps(
            {
                "trial": self.trial,
                "config": self.config,
                "reports": self.reports,
                "stopped_early": self.stopped_early,
            }
        )


def canonical(value: Any) -> str:
    """The canonical JSON of a configuration: sorted keys, no spaces (equal text, equal config)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _restart_hint(path: Path) -> str:
    return f"delete {path} to start the unit over"


def read_partial(path: Path) -> dict[int, RecordedTrial]:
    """The recorded trials by number; empty when ``path`` does not exist. A line that is not a
    recorded trial is one ``ConfigError`` naming the file and line."""
    if not path.is_file():
        return {}
    out: dict[int, RecordedTrial] = {}
    for n, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            d = json.loads(text)
            rec = RecordedTrial(
                int(d["trial"]), dict(d["config"]), list(d["reports"]), bool(d["stopped_early"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path}, line {n}: not a recorded trial ({exc}); {_restart_hint(path)}"
            ) from None
        out[rec.trial] = rec
    return out


def append_partial(path: Path, record: RecordedTrial) -> None:
    """Add one trial to the partial file: the whole file is rewritten atomically, so a driver
    killed at any point leaves either the old file or the new one (a few kilobytes per trial)."""
    old = path.read_text() if path.is_file() else ""
    write_text_atomic(path, old + record.line() + "\n")


def _stop_after() -> int | None:
    text = os.environ.get(STOP_AFTER_ENV, "").strip()
    return int(text) if text else None


@dataclass
class Journal:
    """The driver's replay state for one unit, shared by the searcher (which trial is proposed)
    and the recording callback (which trial finished). ``path`` is None when nothing is recorded
    (``--concurrent`` above 1)."""

    path: Path | None
    recorded: dict[int, RecordedTrial] = field(default_factory=dict)
    stop_after: int | None = field(default_factory=_stop_after)
    proposed: int = 0
    finished: int = 0
    problem: str | None = None
    stopped: bool = False
    numbers: dict[str, int] = field(default_factory=dict)
    proposals: dict[int, dict[str, Any]] = field(default_factory=dict)

    def replays(self) -> dict[int, list[dict[str, Any]]]:
        """What the trainables need: each recorded trial's reports by number."""
        return {n: r.reports for n, r in self.recorded.items()}

    def propose(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any] | None:
        """Number the searcher's next proposal (Ray's ``trial_id``) and mark it for replay when
        recorded; None (and ``problem`` set) when it differs from the record."""
        self.proposed += 1
        self.numbers[trial_id] = self.proposed
        self.proposals[self.proposed] = dict(config)
        rec = self.recorded.get(self.proposed)
        if rec is None:
            return config
        if canonical(config) != canonical(rec.config):
            self.problem = (
                f"{self.path}: trial {self.proposed}'s sampled configuration {canonical(config)} differs "
                f"from the recorded {canonical(rec.config)} (the code or the search space changed); "
                f"{_restart_hint(self.path)}"
            )
            return None
        return {**config, REPLAY_KEY: self.proposed}

    def should_stop(self) -> bool:
        """True once the test switch's number of trials has finished (``STOP_AFTER_ENV``)."""
        self.stopped = self.stopped or (self.stop_after is not None and self.finished >= self.stop_after)
        return self.stopped

    def trial_finished(self, trial_id: str, reports: list[dict[str, Any]], stopped_early: bool) -> None:
        """Record a finished trial (not an errored one), unless it was replayed from the file:
        then check that it ended as recorded."""
        self.finished += 1
        number = self.numbers.get(trial_id)
        if self.path is None or number is None:
            return
        record = RecordedTrial(number, self.proposals[number], reports, stopped_early)
        old = self.recorded.get(record.trial)
        if old is None:
            append_partial(self.path, record)
            self.recorded[record.trial] = record
        elif (len(old.reports), old.stopped_early) != (len(record.reports), record.stopped_early):
            self.problem = self.problem or (
                f"{self.path}: replayed trial {record.trial} ended after {len(record.reports)} reports "
                f"(stopped early: {record.stopped_early}), recorded {len(old.reports)} "
                f"({old.stopped_early}); {_restart_hint(self.path)}"
            )

    def check(self) -> None:
        """Raise the replay's problem, if any, as one ``ConfigError`` line."""
        if self.problem:
            raise ConfigError(self.problem)


def replaying_searcher(journal: Journal, **kwargs: Any) -> Any:
    """Ray Tune's ``OptunaSearch`` (``kwargs`` passed on) whose proposals go through ``journal``:
    numbered, marked for replay, and ``FINISHED`` on a mismatch or the test switch."""
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class ReplayingOptunaSearch(OptunaSearch):
        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            if journal.problem or journal.should_stop():
                return Searcher.FINISHED
            config = super().suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            marked = journal.propose(trial_id, config)
            return Searcher.FINISHED if marked is None else marked

    return ReplayingOptunaSearch(**kwargs)

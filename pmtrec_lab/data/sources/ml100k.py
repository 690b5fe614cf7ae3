"""MovieLens-100k (Harper and Konstan, "The MovieLens Datasets: History and Context", TiiS 2015)
in the RecBole atomic-file form (Zhao et al., "RecBole", CIKM'21) with its Freebase knowledge
graph (as prepared for KB4Rec, Zhao et al., Data Intelligence 2019). It is read by the generic
``atomic`` loader with ml-100k's task declarations (``registry.ML100K_TASKS``); this module adds
the fetching and the README's raw-count keys.

The release ships inside the ``recbole==1.2.1`` wheel on PyPI under
``recbole/dataset_example/ml-100k/``. When the five files are not under ``root``,
``ensure_ml100k`` downloads that wheel with ``pip download --no-deps`` (nothing is installed),
checks its sha256 and extracts only those files into the cache, atomically.

Labels: genre (item, multi; ``class:token_seq``), occupation (user, single) and age band (user,
single; <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ as in the ML-1M bands). Item relation
``kg``: distinct items sharing a tail entity through ``KG_RELATIONS`` (head entities mapped to
items through ``.link``), entities linked to more than ``MAX_ENTITY_FILMS`` films dropped.
Genre, language, country, content-rating and award relations link nearly every pair and are
left out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pmtrec_lab.config import AtomicFields
from pmtrec_lab.data.registry import ML100K_TASKS
from pmtrec_lab.data.sources.atomic import AtomicTask, read_folder
from pmtrec_lab.data.types import RawDataset
from pmtrec_lab.errors import DataFormatError, MissingDataError
from pmtrec_lab.paths import cache_dir

FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item", "ml-100k.kg", "ml-100k.link")
RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
WHEEL_MEMBER_DIR = "recbole/dataset_example/ml-100k/"

_DECLARED = {d["name"]: d for d in ML100K_TASKS}
#: Exact .kg relation names used for the item-item task (the head entity is the film), and the cap
#: on the films an entity may link (from the declarations, their one owner).
KG_RELATIONS: tuple[str, ...] = tuple(_DECLARED["kg"]["relations"])
MAX_ENTITY_FILMS: int = _DECLARED["kg"]["max_degree"]
AGE_BOUNDS = np.array(_DECLARED["age"]["bins"])
AGE_BANDS: list[str] = list(_DECLARED["age"]["bin_names"])


def _pip_download_command(dest: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        RECBOLE_REQUIREMENT,
        "-d",
        str(dest),
    ]


def _manual_hint(target: Path) -> str:
    return (
        f"to supply the files manually, download {WHEEL_NAME} from https://pypi.org/project/recbole/1.2.1/"
        f"#files, check its sha256 is {WHEEL_SHA256}, and extract {WHEEL_MEMBER_DIR}"
        f"{{{','.join(f.split('.', 1)[1] for f in FILES)}}} into {target} (or into <data-dir>/ml-100k/)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in FILES)


def ensure_ml100k(target: Path | None = None) -> Path:
    """Return a directory holding the five ml-100k files, fetching them into ``target`` if absent.

    Default ``target``: ``cache_dir()/datasets/ml-100k``. The wheel is downloaded to a temporary
    directory, its sha256 checked, the five files extracted into a temporary directory beside
    ``target`` and that directory renamed into place: ``target`` is never half-written.
    """
    target = Path(target) if target is not None else cache_dir() / "datasets" / "ml-100k"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ml-100k-download-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        wheel_dir = tmp_path / "wheel"
        command = _pip_download_command(wheel_dir)
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MissingDataError(
                f"ml-100k: could not run {' '.join(command)} ({exc}); {_manual_hint(target)}"
            ) from None
        wheels = sorted(wheel_dir.glob("recbole-*.whl")) if wheel_dir.is_dir() else []
        if proc.returncode != 0 or not wheels:
            tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
            raise MissingDataError(
                f"ml-100k: tried `{' '.join(command)}` to fetch the release from PyPI; it failed "
                f"(exit {proc.returncode}: {tail or 'no wheel downloaded'}); {_manual_hint(target)}"
            )
        digest = _sha256(wheels[0])
        if digest != WHEEL_SHA256:
            raise MissingDataError(
                f"ml-100k: downloaded {wheels[0].name} has sha256 {digest}, expected {WHEEL_SHA256}; "
                f"refusing to use it; {_manual_hint(target)}"
            )
        staging = tmp_path / "ml-100k"
        staging.mkdir()
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                for name in FILES:
                    with zf.open(WHEEL_MEMBER_DIR + name) as src, open(staging / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise MissingDataError(
                f"ml-100k: {wheels[0].name} lacks the release ({exc}); {_manual_hint(target)}"
            ) from None
        if target.exists() and not _complete(target):
            # An incomplete folder (from an older, interrupted layout): move it aside, then replace.
            stale = tmp_path / "stale"
            os.replace(target, stale)
        try:
            os.replace(staging, target)
        except OSError:
            if not _complete(target):  # another process may have won the race
                raise
    return target


def load_raw(root: Path | None = None) -> RawDataset:
    """Read ml-100k from ``root`` if it holds the five files, else from the cache (fetched if needed).

    The ``atomic`` loader with ml-100k's task declarations (``registry.ML100K_TASKS``); the raw
    counts are the datasets README's keys for ml-100k, and negative ages are refused.
    """
    folder = Path(root) if root is not None and _complete(Path(root)) else ensure_ml100k()
    tasks = [AtomicTask.model_validate(d) for d in ML100K_TASKS]
    read = read_folder(folder, AtomicFields(), tasks, stem="ml-100k", name="ml-100k")
    raw, stats = read.raw, read.stats
    users = read.tables["user"]
    ages = users.numbers(users.columns["age"], np.arange(len(users)), "age")
    negative = np.flatnonzero(ages < 0)
    if negative.size:
        i = int(negative[0])
        raise DataFormatError(users.path, f"negative age {ages[i]:g}", line=int(users.lines[i]))
    finite = ages[~np.isnan(ages)]
    counts = raw.raw_counts
    raw.raw_counts = {
        "users": counts["users"],
        "items": counts["items"],
        "interactions": counts["interactions"],
        "rows": counts["rows"],
        "genres": stats["genre"]["count"],
        "occupations": stats["occupation"]["count"],
        "age_min": int(finite.min()) if finite.size else 0,
        "age_max": int(finite.max()) if finite.size else 0,
        "kg_triples": int(len(read.tables["kg"])),
        "links": int(len(read.tables["link"])),
    }
    extra = raw.extra
    raw.extra = {
        "kg_item_pairs": stats["kg"]["pairs"],
        "kg_items": stats["kg"]["items"],
        "kg_relations": list(KG_RELATIONS),
        "kg_max_entity_films": MAX_ENTITY_FILMS,
        "timestamps": extra["timestamps"],
        "source_dir": str(folder),
        "unmatched": extra["unmatched"],
    }
    return raw

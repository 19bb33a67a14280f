"""The files of a real labeling round: a folder of images, the labels a person gave so far
(``labels.csv``: ``path,label``), and the next batch to label (CSV, or Label Studio tasks).

Every problem with them is a :class:`~fishermask.errors.DataError` that names the file, the row
and what to do, raised before any training.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fishermask.data.features import FeatureData
from fishermask.data.files import ImageFiles, sample_stats
from fishermask.data.pool import ImageData
from fishermask.data.readers import image_stats, list_images, read_images
from fishermask.errors import DataError

UNLABELED = -1
"""The target of an image nobody has labeled yet."""
LABEL_STUDIO_PREFIX = "/data/local-files/?d="
"""How Label Studio serves a file of its local-files storage (document root: the image folder)."""


@dataclass
class LabelingPool:
    """The pool of a labeling round: the folder's images (``paths`` relative to the folder, in
    pool order) or the rows of a features file (``paths`` None: a row is named by its number),
    the classes, and which items are labeled."""

    paths: Optional[list[str]]
    classes: list[str]
    labeled: np.ndarray       # pool indices, sorted
    data: "ImageData | ImageFiles | FeatureData"  # targets: a labeled item's class, UNLABELED otherwise

    @property
    def unlabeled(self) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.data)), self.labeled)

    def name(self, i: int) -> str:
        return self.paths[i] if self.paths is not None else str(int(i))


def read_labels(path: Path, column: str = "path") -> list[tuple[int, str, str]]:
    """(line number, item, label) of every row of a ``path,label`` (images) or ``row,label``
    (features) CSV."""
    if not path.is_file():
        raise DataError(f"--labeled {path}: no such file; give a CSV with the columns "
                        f"{column},label (one row per item a person has labeled)")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {column, "label"} <= set(reader.fieldnames):
            raise DataError(f"--labeled {path}: the header must name the columns {column} and "
                            f"label (found {reader.fieldnames or 'no header'})")
        rows = [(i + 2, (r[column] or "").strip(), (r["label"] or "").strip())
                for i, r in enumerate(reader)]
    for line, p, label in rows:
        if not p or not label:
            raise DataError(f"--labeled {path}, line {line}: an empty path or label")
    return rows


def _relative(root: Path, given: str) -> str:
    p = Path(given)
    if p.is_absolute():
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return given
    return p.as_posix()


def _check_rows(rows, file: Path, position, what: str,
                classes: Optional[list[str]]) -> list[str]:
    """The classes (the CSV's, sorted, or ``classes``) after checking every row (``position``:
    an item's pool index, or None when the pool has no such item)."""
    seen: dict[str, int] = {}
    for line, p, label in rows:
        if p in seen:
            raise DataError(f"--labeled {file}, line {line}: {p!r} is listed twice (also on line "
                            f"{seen[p]}); each item gets one label")
        seen[p] = line
        if position(p) is None:
            raise DataError(f"--labeled {file}, line {line}: {p!r} is not {what}")
        if classes is not None and label not in classes:
            raise DataError(f"--labeled {file}, line {line}: label {label!r} is not one of "
                            f"--classes {','.join(classes)}")
    names = list(classes) if classes is not None else sorted({label for _, _, label in rows})
    if len(names) < 2:
        raise DataError(f"--labeled {file}: {len(names)} class(es) {names}; a classifier needs at "
                        f"least 2 (label images of two classes, or give --classes a,b,...)")
    return names


def labeling_pool(root: Path, labels_csv: Path, image_size: int,
                  classes: Optional[list[str]] = None, in_memory: bool = True,
                  seed: int = 0) -> LabelingPool:
    """The images under ``root`` with the labels of ``labels_csv`` (checked first): decoded into
    memory, or with ``in_memory=False`` decoded when used (normalised with the statistics of a
    ``seed``-ed sample, :func:`~fishermask.data.files.sample_stats`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.data_dir {root} is not a folder; give the folder of the images "
                        f"to label")
    paths = list_images(root)
    if not paths:
        raise DataError(f"data.data_dir {root} holds no image files")
    rows = [(line, _relative(root, p), label) for line, p, label in read_labels(labels_csv)]
    position = {p: i for i, p in enumerate(paths)}
    names = _check_rows(rows, labels_csv, position.get,
                        "an image of the folder (paths are relative to data.data_dir)", classes)
    targets = _targets(len(paths), rows, position.get, names)
    files = [str(root / p) for p in paths]
    if in_memory:
        images = read_images(root, files, image_size)
        data = ImageData(images, torch.from_numpy(targets), names, *image_stats(images))
    else:
        gray, mean, std = sample_stats(root, files, image_size, seed)
        data = ImageFiles(root, files, torch.from_numpy(targets), names, image_size, gray, mean,
                          std)
    return LabelingPool(paths, names, np.flatnonzero(targets != UNLABELED), data)


def _targets(n: int, rows, position, names: list[str]) -> np.ndarray:
    targets = np.full(n, UNLABELED, dtype=np.int64)
    for _, p, label in rows:
        targets[position(p)] = names.index(label)
    return targets


def feature_labeling_pool(features: Path, labels_csv: Path,
                          classes: Optional[list[str]] = None) -> LabelingPool:
    """The rows of a features file with the labels of ``labels_csv`` (columns ``row,label``, a
    row by its number in the file), checked first; the rows stay on disk."""
    n = FeatureData(features, None, []).file_shape[0]

    def position(p: str) -> Optional[int]:
        return int(p) if p.isdigit() and int(p) < n else None

    rows = read_labels(labels_csv, "row")
    names = _check_rows(rows, labels_csv, position,
                        f"a row of data.features (0 to {n - 1})", classes)
    targets = _targets(n, rows, position, names)
    data = FeatureData(features, torch.from_numpy(targets), names)
    return LabelingPool(None, names, np.flatnonzero(targets != UNLABELED), data)


def write_picks(out: Path, paths: list[str], scores: Optional[np.ndarray],
                fmt: str = "csv", prefix: str = LABEL_STUDIO_PREFIX, column: str = "path") -> Path:
    """The next items to label, most informative first: a CSV ``path,rank[,score]`` (``row`` for
    features), or a Label Studio import file (``label-studio``: a JSON list of tasks whose
    ``data.image`` is the file as Label Studio's local-files storage serves it, prefix + path)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "label-studio":
        tasks = [{"data": {"image": f"{prefix}{p}", "path": p, "rank": r + 1,
                           **({"score": float(scores[r])} if scores is not None else {})}}
                 for r, p in enumerate(paths)]
        out.write_text(json.dumps(tasks, indent=1) + "\n")
        return out
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([column, "rank"] + (["score"] if scores is not None else []))
        for r, p in enumerate(paths):
            w.writerow([p, r + 1] + ([f"{float(scores[r]):.6g}"] if scores is not None else []))
    return out


__all__ = ["LABEL_STUDIO_PREFIX", "LabelingPool", "UNLABELED", "feature_labeling_pool",
           "labeling_pool", "read_labels", "write_picks"]

"""Dataset readers (files on disk to uint8 tensors; no maths, Ray or MLflow).

Each ``load_<dataset>(cfg, seed)`` returns ``(train_x, train_y), (test_x, test_y), class names,
mean, std``: images as uint8 ``(N, C, H, W)`` tensors, labels as int arrays, and the per-channel
normalisation constants on the [0, 1] scale.  ``fishermask.data`` draws the imbalanced pool from
the train split.  A missing or unreadable dataset raises :class:`DataError` naming the files it
expects and how to get them (``data.download=true`` or ``data.data_dir``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch

from fishermask._compat import import_torchvision
from fishermask.data.params import DataParams
from fishermask.errors import DataError

NORMALIZATION = {  # standard per-channel constants on the [0, 1] scale
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch", "batches.meta")
_GRAY_MODES = ("1", "L", "LA", "F", "I", "I;16", "I;16B", "I;16L")


def holdout(y: np.ndarray, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified hold-out: sorted (train, test) index arrays."""
    from sklearn.model_selection import train_test_split

    try:
        tr, te = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y,
                                  random_state=seed % 2**32)
    except ValueError as exc:
        raise DataError(f"{what}: cannot make a stratified test hold-out of data.test_fraction="
                        f"{fraction}: {exc}. Every class needs at least 2 images and the hold-out at "
                        f"least one per class; add images or change data.test_fraction") from None
    return np.sort(tr), np.sort(te)


def image_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of uint8 images on the [0, 1] scale (chunked, float64 sums)."""
    s1 = s2 = torch.zeros(x.shape[1], dtype=torch.float64)
    for chunk in x.split(4096):
        f = chunk.double() / 255.0
        s1, s2 = s1 + f.sum((0, 2, 3)), s2 + (f * f).sum((0, 2, 3))
    n = x.numel() / x.shape[1]
    mean = s1 / n
    return tuple(mean.tolist()), tuple((s2 / n - mean**2).clamp_min(1e-12).sqrt().tolist())


def load_digits(cfg: DataParams, seed: int):
    from sklearn import datasets as sk_datasets

    d = sk_datasets.load_digits()
    x = torch.from_numpy(np.clip(d.images * 16, 0, 255).astype(np.uint8)[:, None])
    y = d.target.astype(np.int64)
    tr, te = holdout(y, cfg.test_fraction, seed, "digits")
    mean, std = image_stats(x[tr])
    return (x[tr], y[tr]), (x[te], y[te]), [str(c) for c in d.target_names], mean, std


def cache_dir() -> Path:
    """Writable cache root: ``$FISHERMASK_CACHE`` or ``~/.cache/fishermask``."""
    env = os.environ.get("FISHERMASK_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "fishermask"
    return Path(env).expanduser() if env else base


def _missing_fashion(root: Path, extra: str = "") -> DataError:
    raw = root / "FashionMNIST" / "raw"
    return DataError(
        f"FashionMNIST not found in data.data_dir={str(root)!r}{extra}. Either download it with "
        f"--set data.download=true (into data.data_dir; needs internet), or put the four "
        f"Fashion-MNIST files {', '.join(FMNIST_FILES)} (unpacked, or as the official .gz files) "
        f"into {raw}/")


def _unpack_fashion_gz(raw: Path) -> Path:
    """Unpack ``raw/*.gz`` once into the cache; return the root torchvision should load from.

    The cache folder is keyed by a stamp with the md5s of the .gz files, so it is rebuilt only
    when the source changes; files are written atomically (safe for concurrent trials).
    """
    stamp = "".join(f"{f}.gz {hashlib.md5((raw / f'{f}.gz').read_bytes()).hexdigest()}\n"
                    for f in FMNIST_FILES)
    root = cache_dir() / "datasets"
    dest = root / "FashionMNIST" / "raw"
    marker = dest / ".fishermask-source"
    if marker.is_file() and marker.read_text() == stamp and all((dest / f).is_file() for f in FMNIST_FILES):
        return root
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for f in FMNIST_FILES:
            tmp = dest / f".{f}.{os.getpid()}.tmp"
            with gzip.open(raw / f"{f}.gz", "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest / f)
        tmp = dest / f".source.{os.getpid()}.tmp"
        tmp.write_text(stamp)
        os.replace(tmp, marker)
    except (OSError, EOFError) as exc:
        if isinstance(exc, (gzip.BadGzipFile, EOFError)):
            raise DataError(f"{raw}: a FashionMNIST .gz file is corrupt ({exc}); replace it or use "
                            f"--set data.download=true") from None
        raise DataError(f"cannot unpack FashionMNIST from {raw} into the cache {dest}: {exc}. "
                        f"Set the environment variable FISHERMASK_CACHE to a writable folder") from None
    return root


def load_fashion_mnist(cfg: DataParams, seed: int):
    tv = import_torchvision()
    root = Path(cfg.data_dir).expanduser()

    def load(r: Path, download: bool = False):
        return [tv.datasets.FashionMNIST(str(r), train=t, download=download) for t in (True, False)]

    raw = root / "FashionMNIST" / "raw"

    def not_fashion(exc: Exception, files: str) -> DataError:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else "not in the IDX format"
        return DataError(f"{raw}: the FashionMNIST {files} are not the Fashion-MNIST data ({why}); "
                         f"replace them with the official files or use --set data.download=true")

    bad_content = (ValueError, AssertionError, IndexError, TypeError)
    try:  # unpacked files in data_dir (what torchvision itself checks)
        sets = load(root)
    except bad_content as exc:
        raise not_fashion(exc, "files " + ", ".join(FMNIST_FILES)) from None
    except RuntimeError:
        if all((raw / f"{f}.gz").is_file() for f in FMNIST_FILES):
            unpacked = _unpack_fashion_gz(raw)  # only the .gz files: unpack into the cache
            try:
                sets = load(unpacked)
            except (RuntimeError, OSError, *bad_content) as exc:
                raise not_fashion(exc, "files " + ", ".join(f + ".gz" for f in FMNIST_FILES)) \
                    from None
        elif cfg.download:
            try:
                sets = load(root, download=True)
            except (RuntimeError, OSError) as exc:
                raise _missing_fashion(root, f" and the download failed ({exc})") from None
        else:
            raise _missing_fashion(root) from None
    (tr, te), (mean, std) = sets, NORMALIZATION["fashion_mnist"]
    return (tr.data[:, None], tr.targets.numpy()), (te.data[:, None], te.targets.numpy()), list(tr.classes), mean, std


def _cifar10_class():
    tv = import_torchvision()

    class _CIFAR10(tv.datasets.CIFAR10):
        """torchvision's CIFAR10, but with ``download=False`` the integrity check only requires the
        batch files to exist.  torchvision verifies the md5 of every batch, which files written by a
        test (or any re-packed copy) cannot match; with ``download=True`` torchvision's full md5
        check still runs.  Accepts the pickles' keys as str (Python 2 files read with latin1) or
        bytes (``b'data'``, ``b'labels'``, ``b'label_names'`` as Python 3 writes them)."""

        def __init__(self, root: str, train: bool, download: bool) -> None:
            tv.datasets.VisionDataset.__init__(self, root)
            self.train, self._verify_md5 = train, download
            if download:
                self.download()
            if not self._check_integrity():
                raise RuntimeError("Dataset not found or corrupted")
            parts = [self._read(n) for n, _ in (self.train_list if train else self.test_list)]
            self.data = np.concatenate([p["data"] for p in parts]).reshape(-1, 3, 32, 32)
            self.targets = [int(t) for p in parts for t in p["labels"]]
            self.classes = [c.decode() if isinstance(c, bytes) else c
                            for c in self._read(self.meta["filename"])[self.meta["key"]]]

        def _read(self, name: str) -> dict:
            with open(os.path.join(self.root, self.base_folder, name), "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            return {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}

        def _check_integrity(self) -> bool:
            if self._verify_md5:
                return super()._check_integrity()
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in CIFAR_FILES)

    return _CIFAR10


def load_cifar10(cfg: DataParams, seed: int):
    root = Path(cfg.data_dir).expanduser()
    folder = root / "cifar-10-batches-py"
    missing = [f for f in CIFAR_FILES if not (folder / f).is_file()]
    try:
        if missing and not cfg.download:
            raise FileNotFoundError(f"missing {', '.join(missing)}")
        tr, te = (_cifar10_class()(str(root), train=t, download=cfg.download) for t in (True, False))
    except (RuntimeError, OSError, KeyError, pickle.UnpicklingError, ValueError) as exc:
        how = "download failed" if cfg.download else "not found or unreadable"
        raise DataError(
            f"CIFAR-10 {how} in data.data_dir={str(root)!r} ({exc}). Either download it with --set "
            f"data.download=true (into data.data_dir; needs internet), or extract "
            f"cifar-10-python.tar.gz there so that {folder}/ holds {', '.join(CIFAR_FILES)} "
            f"(the CIFAR-10 python version)") from None
    x_tr, x_te = torch.from_numpy(tr.data.copy()), torch.from_numpy(te.data.copy())
    mean, std = NORMALIZATION["cifar10"]
    return (x_tr, np.asarray(tr.targets)), (x_te, np.asarray(te.targets)), list(tr.classes), mean, std


def _folder_error(root: Path, problem: str) -> DataError:
    return DataError(
        f"image_folder: {problem} (data.data_dir={str(root)!r}). Expected one sub-folder per class "
        f"with the images inside, e.g. {root}/<class_a>/img1.png, {root}/<class_b>/img2.jpg; or "
        f"split folders {root}/train/<class>/... and {root}/test/<class>/... (otherwise a stratified "
        f"hold-out of data.test_fraction is the test set)")


def _scan(tv, root: Path, folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    try:
        ds = tv.datasets.ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as exc:
        raise _folder_error(root, str(exc)) from None
    return list(ds.classes), list(ds.samples)


def is_gray(paths: list[str]) -> bool:
    """Whether every one of the image files ``paths`` is grey (their headers only)."""
    from PIL import Image

    gray = True
    for p in paths:
        with Image.open(p) as img:
            gray = gray and img.mode in _GRAY_MODES
    return gray


def decode_images(root: Path, paths: list[str], size: int, gray: bool) -> np.ndarray:
    """The image files ``paths`` decoded to uint8 [N, H, W, C] at ``size``×``size``, grey (C = 1)
    or RGB (C = 3); a DataError naming an unreadable file (``root``: data.data_dir, for the
    message)."""
    from PIL import Image

    channels = 1 if gray else 3
    try:
        out = np.empty((len(paths), size, size, channels), dtype=np.uint8)
    except MemoryError:
        need_gb = len(paths) * size * size * channels * 2 / 1e9  # the array plus its CHW copy
        raise DataError(f"image_folder: {len(paths)} images at data.image_size={size} need "
                        f"about {need_gb:.1f} GB of memory; lower data.image_size or set "
                        f"data.in_memory=false (each image read when used)") from None
    current = ""
    try:
        for i, current in enumerate(paths):
            with Image.open(current) as img:
                if img.mode.startswith("I;16"):
                    img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
                img = img.convert("L" if gray else "RGB").resize((size, size), Image.BILINEAR)
                out[i] = np.asarray(img).reshape(size, size, -1)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL: unreadable, truncated or bad file
        raise DataError(f"image_folder: cannot read the image {current}: {exc}. Replace or "
                        f"remove that file (data.data_dir={str(root)!r})") from None
    return out


def read_images(root: Path, paths: list[str], size: int) -> torch.Tensor:
    """The image files ``paths`` as uint8 [N, C, H, W] at ``size``×``size`` (grey when every file
    is grey, else RGB); a DataError naming an unreadable file."""
    try:
        gray = is_gray(paths)
    except (OSError, SyntaxError, ValueError):
        gray = False  # decode_images names the unreadable file
    return torch.from_numpy(decode_images(root, paths, size, gray)).permute(0, 3, 1, 2).contiguous()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(root: Path) -> list[str]:
    """Every image file under ``root`` (sub-folders included), as sorted paths relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_folder(cfg: DataParams, seed: int):
    """An image folder's classes, image paths, labels and (train, test) positions: train/ and
    test/ when both exist, else one folder per class with a stratified hold-out."""
    tv = import_torchvision()
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise _folder_error(root, "the folder does not exist")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, tr_samples = _scan(tv, root, root / "train")
        te_classes, te_samples = _scan(tv, root, root / "test")
        unknown = sorted(set(te_classes) - set(classes))
        if unknown:
            raise _folder_error(root, f"test/ has classes {unknown} that train/ lacks")
        te_map = [classes.index(c) for c in te_classes]
        samples = tr_samples + [(p, te_map[t]) for p, t in te_samples]
        y = np.array([t for _, t in samples], dtype=np.int64)
        tr, te = np.arange(len(tr_samples)), np.arange(len(tr_samples), len(y))
    elif (root / "train").is_dir() or (root / "test").is_dir():
        raise _folder_error(root, "found only one of train/ and test/; give both or neither")
    else:
        classes, samples = _scan(tv, root, root)
        y = np.array([t for _, t in samples], dtype=np.int64)
        tr, te = holdout(y, cfg.test_fraction, seed, f"image_folder {root}")
    return root, classes, [p for p, _ in samples], y, tr, te


def load_image_folder(cfg: DataParams, seed: int):
    root, classes, paths, y, tr, te = scan_folder(cfg, seed)
    x = read_images(root, paths, cfg.image_size)
    mean, std = image_stats(x[tr])
    return (x[tr], y[tr]), (x[te], y[te]), classes, mean, std

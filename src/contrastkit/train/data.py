"""Image data sets for training and evaluation, as ``(N, 1, H, W)`` float tensors in [0, 1].

* ``"digits"``: scikit-learn's 8x8 digits (1797 images), embedded, no files needed;
* ``"mnist"``: the MNIST test set (10k 28x28 images, IDX gz) under ``<root>/mnist-test``;
* ``"mnist5k"``: 5000 MNIST digits (500 per class, CSV gz) under ``<root>/mnist-5k``;
* ``"<name>-textures"`` (e.g. ``"digits-textures"``, ``"mnist-textures"``): a contrastive
  analysis set built from ``<name>`` for background / target methods (SepCLR): in each
  split, a seeded half of the images is *background* (plain digits, group 0) and the other
  half *target* (the same kind of digits with one of the 4 :data:`TEXTURES` added, group 1).
  The texture is the target-only (salient) factor, the digit the common one.

The data root is ``DataConfig.root``, else ``$CONTRASTKIT_DATA``, else ``../shared/data``
relative to the current directory, else relative to the repository. The split into train
(encoder training and kNN memory) and test (queries) is stratified and seeded.
"""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from contrastkit.train.config import DataConfig

ENV_VAR = "CONTRASTKIT_DATA"
_REPO = Path(__file__).resolve().parents[3]
_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # IDX magic numbers (ubyte images / labels)


@dataclass(frozen=True)
class ImageData:
    """A split data set; ``x`` is float32 ``(N, 1, H, W)`` in [0, 1], ``y`` int64 ``(N,)``."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    # Background (0) / target (1) group of each train and test image, for contrastive
    # analysis; None for plain data sets.
    groups: tuple[torch.Tensor, torch.Tensor] | None = None
    # The target-only factor of each train and test image (-1 for background images).
    salient: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.train_y, self.test_y]).max()) + 1


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the shared data sets (see the module docstring for the order)."""
    if root is not None:
        return Path(root)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    candidates = [Path.cwd().parent / "shared" / "data", _REPO.parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def load_dataset(cfg: DataConfig) -> ImageData:
    """Load ``cfg.name``, optionally subsample it, and split it into train / test."""
    if cfg.name.endswith(_TEXTURED):
        return _with_textures(load_dataset(replace(cfg, name=cfg.name[: -len(_TEXTURED)])))
    x, y = load_arrays(cfg.name, cfg.root)
    if cfg.subset is not None and cfg.subset < len(y):
        keep = _stratified_indices(y, cfg.subset, cfg.split_seed)
        x, y = x[keep], y[keep]
    tr, te = split_indices(y, cfg.test_fraction, cfg.split_seed)
    return ImageData(cfg.name, _images(x[tr]), _labels(y[tr]), _images(x[te]), _labels(y[te]))


TEXTURES = ("horizontal stripes", "vertical stripes", "diagonal stripes", "dot grid")
TEXTURE_STRENGTH = 0.5
_TEXTURED = "-textures"


def textures(size: int = 28) -> torch.Tensor:
    """The 4 :data:`TEXTURES` as ``(4, 1, size, size)`` masks in {0, 1}."""
    r = torch.arange(size)[:, None].expand(size, size)
    c = torch.arange(size)[None, :].expand(size, size)
    t = torch.stack(
        [(r % 4 < 2), (c % 4 < 2), ((r + c) % 6 < 2), ((r % 5 < 2) & (c % 5 < 2))]
    ).float()
    return t[:, None]


def add_texture(x: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Images ``x`` (N, 1, S, S) with texture ``kind[i]`` laid over image i (pixel-wise max
    with the texture at :data:`TEXTURE_STRENGTH`)."""
    return torch.maximum(x, TEXTURE_STRENGTH * textures(x.shape[-1])[kind])


def _with_textures(data: ImageData) -> ImageData:
    """``data`` as a contrastive-analysis set (see the module doc); seeded by the name."""
    g = torch.Generator().manual_seed(0)
    parts = {}
    for split, x in (("train", data.train_x), ("test", data.test_x)):
        n = len(x)
        group = torch.zeros(n, dtype=torch.long)
        group[torch.randperm(n, generator=g)[: n // 2]] = 1
        kind = torch.randint(0, len(TEXTURES), (n,), generator=g)
        kind = torch.where(group == 1, kind, -1)
        target = group == 1
        x = x.clone()
        x[target] = add_texture(x[target], kind[target])
        parts[split] = (x, group, kind)
    (trx, trg, trk), (tex, teg, tek) = parts["train"], parts["test"]
    name = data.name + _TEXTURED
    return ImageData(name, trx, data.train_y, tex, data.test_y, (trg, teg), (trk, tek))


def _images(x: np.ndarray) -> torch.Tensor:
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(x)).float().div_(scale)


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(y.astype(np.int64))


def load_arrays(name: str, root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 1, H, W)`` (uint8 for MNIST, float32 in [0, 1] for digits) and labels."""
    if name == "digits":
        return _digits()
    base = data_root(root)
    if name == "mnist":
        d = base / "mnist-test"
        return _mnist_idx(
            str(d / "t10k-images-idx3-ubyte.gz"), str(d / "t10k-labels-idx1-ubyte.gz")
        )
    if name == "mnist5k":
        return _mnist_csv(str(base / "mnist-5k" / "mnist_5k.csv.gz"))
    raise ValueError(
        f"load_dataset: `name` is {name!r}, which is not a data set. "
        f"Fix: use 'digits', 'mnist' or 'mnist5k' (or one of them + '-textures')."
    )


def split_indices(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train / test indices, each sorted."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    return np.sort(tr), np.sort(te)


def _stratified_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(keep)


# Loaders are cached: ``compare`` trains many runs on one data set in one process.
@functools.lru_cache(maxsize=4)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    return _frozen(x), _frozen(d.target.astype(np.int64))


@functools.lru_cache(maxsize=4)
def _mnist_idx(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    x = _read_idx(images, _IDX_IMAGES)
    y = _read_idx(labels, _IDX_LABELS)
    if len(x) != len(y):
        raise ValueError(
            f"load_dataset: {images} holds {len(x)} images but {labels} holds {len(y)} "
            f"labels. Fix: restore both files from the folder's SOURCE.md."
        )
    return _frozen(x[:, None]), _frozen(y.astype(np.int64))


@functools.lru_cache(maxsize=4)
def _mnist_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    _require_file(path)
    a = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    if a.ndim != 2 or a.shape[1] != 28 * 28 + 1:
        raise ValueError(
            f"load_dataset: {path} has shape {a.shape}, expected (N, 785): 784 pixels then "
            f"the label. Fix: restore it from the folder's SOURCE.md."
        )
    return _frozen(a[:, :-1].reshape(-1, 1, 28, 28)), _frozen(a[:, -1].astype(np.int64))


def _read_idx(path: str, magic: int) -> np.ndarray:
    """Parse a gzipped IDX file of unsigned bytes; the header gives the dimensions."""
    _require_file(path)
    raw = gzip.open(path).read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(
            f"load_dataset: {path} starts with magic number {found}, expected {magic} (an "
            f"IDX ubyte file). Fix: restore it from the folder's SOURCE.md."
        )
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"load_dataset: data file {path} does not exist. Fix: set the environment "
            f"variable {ENV_VAR} (or `data.root`) to the folder holding mnist-test/ and "
            f"mnist-5k/ (the project's ../shared/data), or use data.name='digits', which "
            f"needs no files."
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)  # cached arrays are shared between runs
    return a

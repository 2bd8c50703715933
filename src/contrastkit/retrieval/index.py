"""A small vector index over faiss: exact inner-product / L2 search and an IVF index.

``Index`` wraps ``faiss.IndexFlatIP`` / ``faiss.IndexFlatL2`` (exact search) and
``faiss.IndexIVFFlat`` (inverted lists over a k-means coarse quantizer, Jégou, Douze &
Schmid, "Product quantization for nearest neighbor search", TPAMI 2011; faiss: Johnson,
Douze & Jégou, "Billion-scale similarity search with GPUs", 2017; code
``facebookresearch/faiss``, ``faiss/IndexFlat.h``, ``faiss/IndexIVFFlat.h``) behind four
verbs: ``add``, ``search``, ``save``, ``load``.

Conventions (the choices faiss leaves to the caller):

- ``metric="ip"``: scores are inner products; ``"cosine"``: rows of both the added vectors
  and the queries are L2-normalised, then inner products; ``"l2"``: scores are the
  *negated* squared Euclidean distances (faiss returns the squared distances in ascending
  order), so that for every metric a higher score ranks higher, as in
  ``contrastkit.evaluation.retrieval_metrics``.
- Vectors may be torch tensors (any device) or numpy arrays of any real dtype; they are
  cast to contiguous float32, the only type faiss's flat and IVF indexes take.
- ``ids``: non-negative integers (faiss uses -1 for "no result"), unique within the index;
  by default the running position 0, 1, 2, ... Search returns these ids.
- A result slot that has no vector (``k`` larger than the number of vectors, or an IVF
  search whose ``nprobe`` lists hold fewer than ``k`` vectors) has id -1 and score -inf.
- Ties: faiss does not promise an order among equal scores (the flat index returns them in
  decreasing position order), so only distinct scores have a determined ranking.
- An IVF index is trained by k-means on the first ``add`` when it is untrained (faiss's
  default clustering: 25 iterations, seed 1234, so the result is deterministic), or
  explicitly with ``train``. faiss prints a warning when there are fewer than 39 training
  vectors per list; fewer vectors than ``nlist`` is an error. With ``nprobe == nlist`` the
  IVF search is exhaustive and returns the flat index's results.

``save(path)`` writes the faiss index to ``path`` (``faiss.write_index``) and a JSON
sidecar ``<path>.json`` (configuration, ids and the SHA-256 of the index file), each to a
temporary file in the same folder that is then renamed over the target, so a crash never
leaves a half-written file; ``Index.load(path)`` reads both and checks that they belong
together. faiss is imported only when an index is built or loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from contrastkit.core.validation import _fail

__all__ = ["Index"]

METRICS = ("ip", "cosine", "l2")
KINDS = ("flat", "ivf")
_FORMAT = "contrastkit.retrieval.Index"
_VERSION = 1


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss is installed in the dev env
        raise ImportError(
            "contrastkit.retrieval.Index needs faiss: `pip install faiss-cpu` "
            "(or `pip install 'contrastkit[text]'`)"
        ) from err
    return faiss


def _check_positive_int(value, owner: str, arg: str, fix: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        _fail(owner, arg, f"is {value!r}", "it must be an integer", fix, TypeError)
    if value < minimum:
        _fail(owner, arg, f"is {value}", f"it must be >= {minimum}", fix)
    return int(value)


def _check_metric(metric, owner: str) -> str:
    if metric not in METRICS:
        _fail(
            owner,
            "metric",
            f"is {metric!r}",
            f"it must be one of {METRICS}",
            "use 'ip' (inner product), 'cosine' or 'l2'",
        )
    return metric


def _as_float32(x, owner: str, arg: str, dim: int | None) -> np.ndarray:
    """A contiguous float32 ``(N, dim)`` numpy array of finite values."""
    if isinstance(x, torch.Tensor):
        if x.dtype.is_complex or x.dtype == torch.bool:
            _fail(
                owner,
                arg,
                f"has dtype {x.dtype}",
                "vectors must be real numbers",
                f"pass {arg}.float()",
                TypeError,
            )
        x = x.detach().to("cpu", torch.float32).numpy()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "iuf":
            _fail(
                owner,
                arg,
                f"is a numpy array of dtype {x.dtype}",
                "vectors must be integers or floats",
                f"pass {arg}.astype(np.float32)",
                TypeError,
            )
    else:
        _fail(
            owner,
            arg,
            f"is a {type(x).__name__}",
            "it must be a torch.Tensor or a numpy.ndarray",
            f"pass torch.as_tensor({arg})",
            TypeError,
        )
    if x.ndim != 2:
        _fail(
            owner,
            arg,
            f"has shape {tuple(x.shape)}",
            "it must be 2-D (N, dim)",
            f"reshape it, e.g. {arg}.reshape(1, -1) for a single vector",
        )
    if dim is not None and x.shape[1] != dim:
        _fail(
            owner,
            arg,
            f"has dimension {x.shape[1]}",
            f"this index holds {dim}-D vectors",
            "encode with the same model, or build an index of the right dim",
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        _fail(
            owner,
            arg,
            f"contains NaN or inf in rows {np.flatnonzero(bad)[:8].tolist()}",
            "vectors must be finite",
            "check the encoder output",
        )
    return x


def _unit_rows(x: np.ndarray, owner: str, arg: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        _fail(
            owner,
            arg,
            f"has all-zero rows {np.flatnonzero(zero)[:8].tolist()}",
            "cosine similarity is undefined for a zero vector",
            "remove those rows or use metric='ip'",
        )
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _replace_atomically(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class Index:
    """A faiss vector index with ``add``, ``search``, ``save`` and ``load``.

    Build one with ``Index.flat(dim, metric)`` (exact search) or
    ``Index.ivf(dim, nlist, nprobe, metric)`` (approximate: each query scans the ``nprobe``
    of ``nlist`` k-means lists nearest to it). See the module docstring for the score,
    id, tie and missing-result conventions.
    """

    def __init__(
        self, dim: int, *, kind: str = "flat", metric: str = "ip", nlist=None, nprobe: int = 1
    ):
        owner = "Index"
        self.dim = _check_positive_int(dim, owner, "dim", "pass the embedding dimension")
        if kind not in KINDS:
            _fail(
                owner,
                "kind",
                f"is {kind!r}",
                f"it must be one of {KINDS}",
                "use Index.flat(...) or Index.ivf(...)",
            )
        self.kind = kind
        self.metric = _check_metric(metric, owner)
        self.nlist = None
        self._nprobe = None
        if kind == "ivf":
            self.nlist = _check_positive_int(nlist, owner, "nlist", "pass nlist >= 1 lists")
            self.nprobe = nprobe
        self._ids = np.zeros(0, dtype=np.int64)
        self._default_ids = True  # ids are 0..n-1: nothing to store in the sidecar
        self._faiss_index = self._build()

    # ------------------------------------------------------------------ construction
    @classmethod
    def flat(cls, dim: int, metric: str = "ip") -> Index:
        """Exact search (``faiss.IndexFlatIP`` / ``faiss.IndexFlatL2``)."""
        return cls(dim, kind="flat", metric=metric)

    @classmethod
    def ivf(cls, dim: int, nlist: int, nprobe: int = 1, metric: str = "ip") -> Index:
        """Inverted-file index (``faiss.IndexIVFFlat``) with ``nlist`` k-means lists.

        ``nprobe`` lists are scanned per query (1 <= nprobe <= nlist; faiss's default is 1).
        The index is trained on the first ``add`` if ``train`` was not called.
        """
        return cls(dim, kind="ivf", metric=metric, nlist=nlist, nprobe=nprobe)

    def _build(self):
        faiss = _faiss()
        if self.metric == "l2":
            flat, faiss_metric = faiss.IndexFlatL2, faiss.METRIC_L2
        else:
            flat, faiss_metric = faiss.IndexFlatIP, faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            return flat(self.dim)
        # The IVF index refers to its quantizer; keep a Python reference to it as well.
        self._quantizer = flat(self.dim)
        index = faiss.IndexIVFFlat(self._quantizer, self.dim, self.nlist, faiss_metric)
        index.nprobe = self._nprobe
        return index

    # ------------------------------------------------------------------ properties
    @property
    def nprobe(self) -> int | None:
        """Lists scanned per query (IVF only; None for a flat index)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf":
            _fail(
                "Index",
                "nprobe",
                f"was set to {value!r} on a flat index",
                "only an IVF index has lists to probe",
                "use Index.ivf(...)",
            )
        fix = f"pass 1 <= nprobe <= nlist={self.nlist}"
        value = _check_positive_int(value, "Index", "nprobe", fix)
        if value > self.nlist:
            _fail("Index", "nprobe", f"is {value}", f"it cannot exceed nlist={self.nlist}", fix)
        self._nprobe = value
        if hasattr(self, "_faiss_index"):
            self._faiss_index.nprobe = value

    @property
    def is_trained(self) -> bool:
        return bool(self._faiss_index.is_trained)

    @property
    def ids(self) -> torch.Tensor:
        """The ids of the stored vectors, in the order they were added."""
        return torch.from_numpy(self._ids.copy())

    def __len__(self) -> int:
        return int(self._faiss_index.ntotal)

    def __repr__(self) -> str:
        extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.kind == "ivf" else ""
        return f"Index.{self.kind}(dim={self.dim}, metric={self.metric!r}{extra}) [{len(self)}]"

    # ------------------------------------------------------------------ adding
    def _prepare(self, x, owner: str, arg: str) -> np.ndarray:
        x = _as_float32(x, owner, arg, self.dim)
        return _unit_rows(x, owner, arg) if self.metric == "cosine" else x

    def train(self, vectors) -> None:
        """Train the IVF coarse quantizer by k-means on ``vectors`` (at least ``nlist``)."""
        owner = "Index.train"
        if self.kind != "ivf":
            _fail(
                owner,
                "self",
                "is a flat index",
                "only an IVF index is trained",
                "just call add(); flat indexes need no training",
            )
        x = self._prepare(vectors, owner, "vectors")
        if x.shape[0] < self.nlist:
            _fail(
                owner,
                "vectors",
                f"has {x.shape[0]} rows",
                f"k-means into nlist={self.nlist} lists needs at least {self.nlist} vectors",
                "train on more vectors at once, or build the index with a smaller nlist",
            )
        self._faiss_index.train(x)

    def _check_ids(self, ids, n: int, owner: str) -> np.ndarray:
        if ids is None:
            start = int(self._ids.max()) + 1 if len(self._ids) else 0
            return np.arange(start, start + n, dtype=np.int64)
        fix = "pass ids as n distinct non-negative integers (or None for 0, 1, 2, ...)"
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            _fail(owner, "ids", f"has dtype {ids.dtype}", "ids must be integers", fix, TypeError)
        if ids.shape != (n,):
            _fail(owner, "ids", f"has shape {ids.shape}", f"it must be ({n},), one per vector", fix)
        ids = ids.astype(np.int64)
        if (ids < 0).any():
            _fail(
                owner,
                "ids",
                f"contains negative values {ids[ids < 0][:8].tolist()}",
                "ids must be >= 0 (faiss marks a missing result with -1)",
                fix,
            )
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            _fail(
                owner,
                "ids",
                f"repeats {uniq[counts > 1][:8].tolist()}",
                "each id must name one vector",
                fix,
            )
        taken = np.isin(ids, self._ids)
        if taken.any():
            _fail(
                owner,
                "ids",
                f"contains ids already in the index {ids[taken][:8].tolist()}",
                "each id must name one vector",
                fix,
            )
        return ids

    def add(self, vectors, ids=None) -> None:
        """Add ``vectors`` ``(n, dim)``, with integer ``ids`` ``(n,)`` or the next positions.

        An untrained IVF index is first trained on these vectors (at least ``nlist``).
        """
        owner = "Index.add"
        x = self._prepare(vectors, owner, "vectors")
        new_ids = self._check_ids(ids, x.shape[0], owner)
        if x.shape[0] == 0:
            return
        if not self._faiss_index.is_trained:
            if x.shape[0] < self.nlist:
                _fail(
                    owner,
                    "vectors",
                    f"has {x.shape[0]} rows and the IVF index is untrained",
                    f"training k-means into nlist={self.nlist} lists needs at least "
                    f"{self.nlist} vectors",
                    "add at least nlist vectors in the first call, call train() on a "
                    "larger sample first, or use a smaller nlist (or Index.flat)",
                )
            self._faiss_index.train(x)
        self._faiss_index.add(x)
        expected = np.arange(len(self._ids), len(self._ids) + len(new_ids), dtype=np.int64)
        self._default_ids = self._default_ids and bool(np.array_equal(new_ids, expected))
        self._ids = np.concatenate([self._ids, new_ids])

    # ------------------------------------------------------------------ search
    def search(self, queries, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best stored vectors per query: ``(scores, ids)``, each ``(Q, k)``.

        ``scores`` is float32, decreasing along each row (inner product, cosine, or minus
        the squared L2 distance); ``ids`` is int64. Missing slots: id -1, score -inf.
        """
        owner = "Index.search"
        k = _check_positive_int(k, owner, "k", "pass k >= 1 results per query")
        q = self._prepare(queries, owner, "queries")
        if len(self) == 0:
            _fail(
                owner, "self", "holds no vectors", "there is nothing to search", "add vectors first"
            )
        scores, pos = self._faiss_index.search(q, k)
        missing = pos < 0
        ids = np.where(missing, -1, self._ids[np.where(missing, 0, pos)])
        scores = -scores if self.metric == "l2" else scores
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        return torch.from_numpy(scores), torch.from_numpy(ids.astype(np.int64))

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "dim": self.dim,
            "kind": self.kind,
            "metric": self.metric,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "ntotal": len(self),
        }

    def save(self, path) -> None:
        """Write the faiss index to ``path`` and its configuration to ``<path>.json``."""
        faiss = _faiss()
        path = Path(path)
        index = self._faiss_index
        _replace_atomically(path, lambda tmp: faiss.write_index(index, str(tmp)))
        meta = self.config()
        meta["ids"] = None if self._default_ids else self._ids.tolist()
        meta["index_sha256"] = _sha256(path)
        text = json.dumps(meta).encode()

        def write_json(tmp):
            with open(tmp, "wb") as f:
                f.write(text)

        _replace_atomically(_sidecar(path), write_json)

    @classmethod
    def load(cls, path) -> Index:
        """Read an index written by ``save``."""
        owner = "Index.load"
        faiss = _faiss()
        path = Path(path)
        side = _sidecar(path)
        for p in (path, side):
            if not p.is_file():
                _fail(
                    owner,
                    "path",
                    f"is {str(path)!r} but {str(p)!r} does not exist",
                    "an index is saved as the faiss file plus a .json sidecar",
                    "pass the path given to Index.save",
                )
        meta = json.loads(side.read_text())
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            _fail(
                owner,
                "path",
                f"has sidecar format {meta.get('format')!r} version {meta.get('version')!r}",
                f"expected {_FORMAT!r} version {_VERSION}",
                "load a file written by contrastkit.retrieval.Index.save",
            )
        if _sha256(path) != meta["index_sha256"]:
            _fail(
                owner,
                "path",
                f"{str(path)!r} does not match its sidecar's checksum",
                "the index file and its .json must come from the same save",
                "save the index again",
            )
        new = cls.__new__(cls)
        new.dim, new.kind, new.metric = meta["dim"], meta["kind"], meta["metric"]
        new.nlist, new._nprobe = meta["nlist"], meta["nprobe"]
        new._faiss_index = faiss.read_index(str(path))
        if new.kind == "ivf":
            new._faiss_index.nprobe = new._nprobe
        n = int(new._faiss_index.ntotal)
        ids = meta["ids"]
        new._default_ids = ids is None
        new._ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if n != meta["ntotal"] or len(new._ids) != n or new._faiss_index.d != new.dim:
            _fail(
                owner,
                "path",
                f"holds {n} vectors of dim {new._faiss_index.d}",
                f"its sidecar records {meta['ntotal']} of dim {meta['dim']}",
                "save the index again",
            )
        return new

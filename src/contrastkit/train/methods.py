"""The seed methods that own models or memory (``contrastkit.methods``), trained by the
library loop: ``train(cfg)`` and ``contrastkit train --objective NAME`` look ``NAME`` up
here when it is not a registered loss (``contrastkit list`` shows both tables).

=============== ======================================= ====================================
name            what trains                             evaluation features / extra metrics
=============== ======================================= ====================================
``cmim``        A-MIM encoder-decoder + cMIM term        latent mean; reconstruction, probe of
                (:class:`~contrastkit.methods.CMIM`)     the informative embeddings
``mim``         the same without the contrastive term   the same
``sepclr``      common + salient encoders (SepCLR) on    common representation; probes of
                background / target data                 both spaces for digit and texture
``core_tuning`` CE + focal SupCon on mixed hard pairs     encoder features; classifier accuracy
                (Core-tuning) from a pretrained encoder
``finetune_ce`` plain cross-entropy fine-tuning (the     the same
                Core-tuning paper's baseline)
``beclr``       student + EMA teacher with BECLR's loss   student encoder features; 5-way
                and the DyCE memories                    1/5-shot episodes with/without OpTA
=============== ======================================= ====================================

A method run is a :class:`MethodModel`. The loop draws each batch exactly as for a loss
(the same seeded order and augmentations; ``MethodModel.views`` says how many augmented
views, 0 for the clean images), calls ``batch_loss(views, labels, index, epoch)``, steps
the optimizer, then ``after_step(step, total)`` (EMA teachers). The checkpoint holds the
module's whole state (teacher and memories included) with the optimizer, scheduler and
RNG states; randomness inside a method uses the global torch RNG, which the checkpoint
restores, so resume is exact. ``forward(x)`` returns ``(features, features)``, so the
loop's kNN / linear-probe / geometry evaluation applies unchanged; ``extra_metrics`` adds
the method's own check. Method options go in ``loss.params`` (``--set
loss.params.KEY=VALUE``); sizes come from ``model.*`` (``feature_dim`` is the
representation width of every method).

Equal terms over fidelity to each paper's optimiser: every method trains with the
loop's AdamW and warm-up + cosine schedule (``optim.*``), as the losses do. The seed
scripts (``scripts/seeds/<name>.py``) keep their papers' optimisers for the checks in
docs/results.md. Methods run on one process (no ``torchrun``, no ``grad_cache_chunk``).
"""

from __future__ import annotations

import abc
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.train.config import TrainConfig
from contrastkit.train.data import ImageData


class MethodModel(nn.Module, metaclass=abc.ABCMeta):
    """What the training loop needs from a method (see the module doc)."""

    views = 2  # augmented views per sample the loop draws; 0: the clean batch

    def __init__(self, input_shape):
        super().__init__()
        self.input_shape = tuple(input_shape)

    def check_input(self, shape, owner: str) -> None:
        if tuple(shape) != self.input_shape:
            raise ValueError(
                f"{owner}: the {type(self).__name__} was built for images of shape "
                f"{self.input_shape}, but the data has shape {tuple(shape)}. Fix: use data of "
                f"the training image size."
            )

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation evaluation uses, ``(N, D)``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, f

    def bind(self, data: ImageData) -> None:
        """Called once before training with the training data (per-sample side data)."""

    @abc.abstractmethod
    def batch_loss(self, views, labels, index, epoch: int) -> torch.Tensor:
        """The objective of one batch: ``views`` (a tuple of augmented batches, or the clean
        batch alone when ``views == 0``), class ``labels``, dataset ``index``."""

    def after_step(self, step: int, total: int) -> None:
        """Called after every optimizer step; ``step`` counts from 1 to ``total``."""

    def extra_metrics(self, data: ImageData, final: bool) -> dict:
        return {}


@dataclass(frozen=True)
class MethodInfo:
    name: str
    cls: type
    summary: str
    paper: str
    options: dict  # keyword arguments of the class, fixed per name


def _params(cfg: TrainConfig, allowed: tuple[str, ...], name: str) -> dict:
    params = dict(cfg.loss.params)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"train: method {name!r} got unknown loss.params {unknown}. Fix: use only "
            f"{sorted(allowed)}."
        )
    return params


# ---------------------------------------------------------------------------- cMIM


class CMIMRun(MethodModel):
    """cMIM / MIM (:class:`~contrastkit.methods.CMIM`) on the clean images (MIM needs no
    views). Latent width ``model.feature_dim``, two hidden layers of ``model.width``.
    ``loss.params``: the ``CMIM`` options ``temperature``, ``contrastive_weight``
    (cmim only), ``positive``, ``beta``, ``likelihood``, ``x_std``."""

    views = 0
    OPTIONS = ("temperature", "contrastive_weight", "positive", "beta", "likelihood", "x_std")

    def __init__(self, cfg, input_shape, num_classes, *, contrastive: bool, fresh: bool = True):
        from contrastkit.methods.cmim import CMIM, MIM

        super().__init__(input_shape)
        name = "cmim" if contrastive else "mim"
        allowed = self.OPTIONS if contrastive else self.OPTIONS[:1] + self.OPTIONS[2:]
        params = _params(cfg, allowed, name)
        hidden = (cfg.model.width, cfg.model.width)
        cls = CMIM if contrastive else MIM
        self.model = cls(input_shape, cfg.model.feature_dim, hidden, **params)

    def features(self, x):
        # encoder, not encode(): evaluation views (noise) may leave [0, 1], which only the
        # Bernoulli likelihood of the loss needs.
        return self.model.encoder(x)[0]

    def batch_loss(self, views, labels, index, epoch):
        return self.model.loss(views[0])["loss"]

    @torch.no_grad()
    def extra_metrics(self, data, final):
        from contrastkit.evaluation import linear_probe
        from contrastkit.methods.cmim import informative_embeddings

        was = self.training
        self.eval()
        try:
            x_param = self.model.decoder(self.features(data.test_x))
            target = data.test_x.flatten(1)
            if self.model.likelihood == "bernoulli":
                out = {"reconstruction_bce": F.binary_cross_entropy_with_logits(x_param, target)}
            else:
                out = {"reconstruction_mse": F.mse_loss(x_param, target)}
            if final:
                tr = informative_embeddings(self.model, data.train_x)
                te = informative_embeddings(self.model, data.test_x)
                out["informative_linear_acc"] = linear_probe(tr, data.train_y, te, data.test_y)
        finally:
            self.train(was)
        return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------- SepCLR


class SepCLRRun(MethodModel):
    """SepCLR (:class:`~contrastkit.methods.SepCLR`) with MLP encoders of width
    ``model.width`` and representations of ``model.feature_dim`` (both spaces), heads of
    ``model.proj_hidden``. Needs background / target data (``data.name`` ``*-textures``, or
    ``ImageData(groups=...)``). ``loss.params``: ``temperature`` and the four weights."""

    OPTIONS = (
        "temperature",
        "salient_weight",
        "information_less_weight",
        "jem_weight",
        "uniformity_weight",
    )

    def __init__(self, cfg, input_shape, num_classes, *, fresh: bool = True):
        from contrastkit.methods.sepclr import SepCLR

        super().__init__(input_shape)
        params = _params(cfg, self.OPTIONS, "sepclr")
        d = cfg.model.feature_dim
        self.model = SepCLR(
            input_dim=math.prod(input_shape),
            common_dim=d,
            salient_dim=d,
            hidden=cfg.model.width,
            head_hidden=cfg.model.proj_hidden,
            **params,
        )
        self._groups = None  # side data of the training set, not state

    def bind(self, data):
        if data.groups is None:
            raise ValueError(
                f"train: method 'sepclr' needs background (0) / target (1) groups, and data "
                f"{data.name!r} has none. Fix: set data.name to a contrastive-analysis set "
                f"('digits-textures', 'mnist-textures'), or pass ImageData(groups=...)."
            )
        self._groups = data.groups[0]

    def features(self, x):
        return self.model.common_encoder(x)

    def batch_loss(self, views, labels, index, epoch):
        return self.model.loss(views[0], views[1], self._groups[index])

    @torch.no_grad()
    def extra_metrics(self, data, final):
        """Linear probes fit on the training target images, tested on the test target
        images: each space for the digit and for the target-only factor."""
        from contrastkit.evaluation import linear_probe

        if not final or data.salient is None:
            return {}
        was = self.training
        self.eval()
        try:
            out = {}
            tr, te = (s >= 0 for s in data.salient)
            for space, enc in (
                ("common", self.model.common_encoder),
                ("salient", self.model.salient_encoder),
            ):
                a, b = enc(data.train_x[tr]), enc(data.test_x[te])
                for factor, (ytr, yte) in (
                    ("digit", (data.train_y[tr], data.test_y[te])),
                    ("salient", (data.salient[0][tr], data.salient[1][te])),
                ):
                    out[f"{space}_{factor}_acc"] = linear_probe(a, ytr, b, yte)
        finally:
            self.train(was)
        return out


# ---------------------------------------------------------------------------- Core-tuning


class CoreTuningRun(MethodModel):
    """Fine-tuning of a pretrained encoder with a linear classifier: Core-tuning
    (:class:`~contrastkit.methods.CoreTuning`, ``contrast=True``) or plain cross-entropy
    (``contrast=False``, the paper's baseline), on one augmented view per image.

    ``loss.params.pretrained``: the ``checkpoint.pt`` of a ``contrastkit train`` run whose
    encoder is fine-tuned (its ``model.*`` settings must equal this run's); without it the
    encoder starts from random weights (supervised training from scratch). Core-tuning
    also takes the ``CoreTuning`` options (``eta``, ``temperature``, ``alpha``,
    ``min_negative_lam``, ``variant``, ``contrast_dim``). Few labels: ``data.subset``.
    """

    views = 1
    OPTIONS = ("eta", "temperature", "alpha", "min_negative_lam", "variant", "contrast_dim")

    def __init__(self, cfg, input_shape, num_classes, *, contrast: bool, fresh: bool = True):
        from contrastkit.methods.core_tuning import CoreTuning
        from contrastkit.train.models import build_model

        super().__init__(input_shape)
        name = "core_tuning" if contrast else "finetune_ce"
        allowed = ("pretrained", *(self.OPTIONS if contrast else ()))
        params = _params(cfg, allowed, name)
        pretrained = params.pop("pretrained", None)
        encoder = build_model(cfg.model, input_shape).encoder
        if pretrained is not None and fresh:
            encoder.load_state_dict(_pretrained_encoder(pretrained, cfg, input_shape))
        self.contrast = contrast
        self.model = CoreTuning(encoder, cfg.model.feature_dim, num_classes, **params)

    def features(self, x):
        return self.model.encoder(x)

    def batch_loss(self, views, labels, index, epoch):
        if self.contrast:
            return self.model.terms(views[0], labels)["loss"]
        return F.cross_entropy(self.model(views[0]), labels)

    @torch.no_grad()
    def extra_metrics(self, data, final):
        was = self.training
        self.eval()
        try:
            pred = torch.cat(
                [
                    self.model(data.test_x[i : i + 1024]).argmax(1)
                    for i in range(0, len(data.test_x), 1024)
                ]
            )
        finally:
            self.train(was)
        return {"classifier_acc": float((pred == data.test_y).float().mean())}


def _pretrained_encoder(path, cfg: TrainConfig, input_shape) -> dict:
    from contrastkit.train.loop import load_model

    model, saved = load_model(path)
    if saved.model != cfg.model:
        sets = " ".join(
            f"--set model.{k}={v}"
            for k, v in vars(saved.model).items()
            if getattr(cfg.model, k) != v
        )
        raise ValueError(
            f"train: loss.params.pretrained is {str(path)!r}, whose encoder was trained with "
            f"model settings {vars(saved.model)}, but this run has {vars(cfg.model)}. Fix: use "
            f"the pretrained run's settings ({sets})."
        )
    model.check_input(input_shape, "train")
    return model.encoder.state_dict()


# ---------------------------------------------------------------------------- BECLR


class BECLRRun(MethodModel):
    """BECLR pretraining (Poulakakis-Daktylidis & Jamali-Rad, ICLR 2024;
    ``stypoumic/BECLR`` ``model/beclr.py``): a student (encoder, projector, predictor) and
    an EMA teacher (encoder, projector) trained with :func:`~contrastkit.methods.beclr_loss`
    on two views, each embedding set passing through its own
    :class:`~contrastkit.methods.DyCE` memory.

    ``loss.params`` (defaults from the official miniImageNet config
    ``configs/miniimagenet/mini_r18_train.json``): ``lambda_neg`` 0.1, ``temperature``
    2.0, ``ema_base`` 0.995 (teacher momentum, cosine to 1), ``memory_scale`` 40 and
    ``num_clusters`` 200 (memory of 40 x 200 = 8000 rows; ``memory_scale=0`` turns DyCE
    off), ``topk`` 5, ``memory_start_epoch`` (enhancement from this epoch on; default
    15% of ``epochs``, the config's 60 of 400), ``recluster_every`` 60 epochs, and the
    ``DyCE`` options ``epsilon`` (0.05, the code's argparse default) and ``variant``.

    Departures: one optimiser and schedule for all methods (the loop's AdamW; the config
    uses SGD lr 0.3); no patch masking of the student's view (BECLR masks one view of each
    pair); fp32.
    """

    OPTIONS = (
        "lambda_neg",
        "temperature",
        "ema_base",
        "memory_scale",
        "num_clusters",
        "topk",
        "memory_start_epoch",
        "recluster_every",
        "epsilon",
        "variant",
        "episodes",
    )

    def __init__(self, cfg, input_shape, num_classes, *, fresh: bool = True):
        from contrastkit.methods.beclr import DyCE
        from contrastkit.train.loop import make_target
        from contrastkit.train.models import build_model

        super().__init__(input_shape)
        p = _params(cfg, self.OPTIONS, "beclr")
        self.lambda_neg = p.get("lambda_neg", 0.1)
        self.temperature = p.get("temperature", 2.0)
        self.ema_base = p.get("ema_base", 0.995)
        self.memory_start_epoch = p.get("memory_start_epoch", round(0.15 * cfg.epochs))
        self.recluster_every = p.get("recluster_every", 60)
        self.episodes = p.get("episodes", 200)  # few-shot evaluation episodes
        self.student = build_model(cfg.model, input_shape, predictor=True)
        self.teacher = make_target(self.student)
        scale, clusters = p.get("memory_scale", 40), p.get("num_clusters", 200)
        memory = [
            DyCE(
                scale * clusters,
                cfg.model.proj_dim,
                clusters,
                topk=p.get("topk", 5),
                epsilon=p.get("epsilon", 0.05),
                variant=p.get("variant", "paper"),
                seed=cfg.seed + i,
            )
            for i in range(3 if scale else 0)
        ]
        self.memories = nn.ModuleList(memory)  # teacher z, student p, student z
        self.register_buffer("epoch_seen", torch.tensor(-1))

    def features(self, x):
        return self.student.encoder(x)

    def batch_loss(self, views, labels, index, epoch):
        from contrastkit.methods.beclr import beclr_loss

        x1, x2 = views
        z1, z2 = self.student.projector(self.student.encoder(torch.cat([x1, x2]))).chunk(2)
        p1, p2 = self.student.predictor(z1), self.student.predictor(z2)
        with torch.no_grad():
            t1, t2 = self.teacher(torch.cat([x1, x2]))[1].chunk(2)
        if len(self.memories):
            self._maybe_recluster(epoch)
            on = epoch >= self.memory_start_epoch
            t1, t2 = self.memories[0](t1, t2, enhance=on)
            p1, p2 = self.memories[1](p1, p2, enhance=on)
            z1, z2 = self.memories[2](z1, z2, enhance=on)
        return beclr_loss(
            p1, p2, t1, t2, z1, z2, lambda_neg=self.lambda_neg, temperature=self.temperature
        )

    def _maybe_recluster(self, epoch: int) -> None:
        """The code re-clusters every ``recluster_every`` epochs (at the epoch's start)."""
        if epoch != int(self.epoch_seen):
            self.epoch_seen.fill_(epoch)
            if epoch > 0 and epoch % self.recluster_every == 0:
                for memory in self.memories:
                    if bool(memory.clustered):
                        memory.recluster()

    def after_step(self, step, total):
        from contrastkit.train.loop import ema_update

        # BYOL / BECLR cosine schedule of the teacher momentum, from ema_base to 1.
        m = 1.0 - (1.0 - self.ema_base) * (math.cos(math.pi * step / max(1, total)) + 1) / 2
        ema_update(self.teacher, self.student, m)

    @torch.no_grad()
    def extra_metrics(self, data, final):
        """5-way 1-shot and 5-shot accuracy (15 queries) on the test split's features,
        without and with OpTA, on the same episodes (seeded)."""
        from contrastkit.evaluation.few_shot import episode_accuracy, sample_episodes

        if not final:
            return {}
        if int((torch.bincount(data.test_y) >= 20).sum()) < 5:
            warnings.warn(
                f"beclr: no few-shot metrics: the test split of {data.name!r} has fewer than 5 "
                f"classes with 20 images (5-shot + 15 queries). Raise data.test_fraction or "
                f"data.subset to get them.",
                stacklevel=2,
            )
            return {}
        was = self.training
        self.eval()
        try:
            f = self.features(data.test_x)
        finally:
            self.train(was)
        g = torch.Generator().manual_seed(0)
        out = {}
        for k in (1, 5):
            sampled = sample_episodes(data.test_y, 5, k, 15, g, episodes=self.episodes)
            for opta in (False, True):
                r = episode_accuracy(f, data.test_y, k_shot=k, sampled=sampled, opta=opta)
                out[f"{k}shot{'_opta' if opta else ''}_acc"] = float(r["mean"])
        return out


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(
            "cmim",
            CMIMRun,
            "A-MIM encoder-decoder plus the cMIM contrastive term",
            "Livne, arXiv 2509.21511",
            {"contrastive": True},
        ),
        MethodInfo(
            "mim",
            CMIMRun,
            "A-MIM encoder-decoder (Mutual Information Machine)",
            "Livne et al., arXiv 1910.03175",
            {"contrastive": False},
        ),
        MethodInfo(
            "sepclr",
            SepCLRRun,
            "common and salient encoders for background / target data",
            "Louiset et al., ICLR 2024 (SepCLR)",
            {},
        ),
        MethodInfo(
            "core_tuning",
            CoreTuningRun,
            "CE + focal SupCon on mixed hard pairs, fine-tuning a pretrained encoder",
            "Zhang et al., NeurIPS 2021 (Core-tuning)",
            {"contrast": True},
        ),
        MethodInfo(
            "finetune_ce",
            CoreTuningRun,
            "cross-entropy fine-tuning of a pretrained encoder (baseline)",
            "Zhang et al., NeurIPS 2021 (baseline)",
            {"contrast": False},
        ),
        MethodInfo(
            "beclr",
            BECLRRun,
            "student / EMA teacher with BECLR's loss and DyCE memories",
            "Poulakakis-Daktylidis & Jamali-Rad, ICLR 2024 (BECLR)",
            {},
        ),
    )
}


def find_method(name: str) -> MethodInfo | None:
    """The method called ``name``, or None when it is not a method."""
    return METHODS.get(str(name).lower())


def build_method(
    info: MethodInfo, cfg: TrainConfig, input_shape, num_classes: int, fresh: bool = True
) -> MethodModel:
    """``fresh=False`` builds the architecture only (a checkpoint's state follows)."""
    return info.cls(cfg, tuple(input_shape), num_classes, fresh=fresh, **info.options)

"""The configs of hwnas's runs — relaxation, performance control, search, training, pruning —
and the names their options accept. One frozen dataclass per component, saved with every run.

Torch-free on purpose: the CLI builds (and so validates) a run's config before anything heavy
is imported or loaded, so an option error prints at once, not after torch and the data.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from hwnas.errors import HwnasError

RELAXATIONS = ("softmax", "gumbel", "sigmoid")
COMPLEXITY = ("params", "flops")
COSTS = ("none", "latency", *COMPLEXITY)
HYPERNETS = ("none", "linear", "mlp")
LAMBDA_SAMPLING = ("uniform", "log-uniform")
ARCH_GRADS = ("first", "second", "one-level", "hyper-linear", "hyper-mlp")  # hyper-*: hwnas.search.hyperdarts
TRAIN_MODELS = ("darts", "resnet18")
PRUNE_MODELS = ("resnet18",)
PRUNE_HYPERNETS = ("linear", "mlp")
# `hwnas pareto`'s front fine-tune: SGD steps per network of the front (why 400: hwnas.search.inherit's docstring).
FRONT_STEPS = 400


@dataclass(frozen=True)
class RelaxConfig:
    kind: str = "softmax"
    hard: bool = False          # gumbel only: one-hot forward, straight-through backward
    tau_start: float = 5.0      # gumbel temperature at the start of the search ...
    tau_end: float = 0.5        # ... annealed exponentially to this at the end

    def __post_init__(self) -> None:
        if self.kind not in RELAXATIONS:
            raise ValueError(f"unknown relaxation {self.kind!r}; choose one of {', '.join(RELAXATIONS)}")
        if self.hard and self.kind != "gumbel":
            raise ValueError("hard sampling needs the gumbel relaxation")
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ValueError("Gumbel temperatures must be positive")


@dataclass(frozen=True)
class ControlConfig:
    cost: str = "none"                 # none | latency (needs tables) | params | flops
    tables: tuple[str, ...] = ()       # lookup tables, one λ entry per table
    hypernet: str = "none"             # none (fixed λ) | linear | mlp
    lam: float = 0.0                   # the fixed λ of a plain search (hypernet none)
    lambda_max: float | None = None    # Λ; None: estimated (Theorem 1)
    sampling: str = "uniform"          # λ per step: uniform or log-uniform over [0, Λ]
    warmup_epochs: int = 5             # single-path supernet training before S is estimated
    samples: int = 64                  # valid architectures evaluated for S
    eval_batches: int = 4              # validation batches per evaluated architecture
    exclude_none: bool | None = None   # take `none` out of the candidate ops; None: yes with a cost
    lambda_margin: float = 3.0         # Λ = margin × the λ at which the cheapest architecture becomes optimal
    zero_share: float = 0.25           # a λ-hypernet's first share of search steps at λ = 0 only (LambdaSchedule)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(str(t) for t in self.tables))
        if self.tables and self.cost == "none":
            object.__setattr__(self, "cost", "latency")
        if self.cost not in COSTS:
            raise HwnasError(f"unknown --cost {self.cost!r}; choose one of {', '.join(COSTS)}")
        if self.cost == "latency" and not self.tables:
            raise HwnasError("--cost latency needs at least one --table (made by hwnas profile)")
        if self.cost != "latency" and self.tables:
            raise HwnasError(f"--table gives latency costs; it cannot be combined with --cost {self.cost}")
        if self.hypernet not in HYPERNETS:
            raise HwnasError(f"unknown --hypernet {self.hypernet!r}; choose one of {', '.join(HYPERNETS)}")
        if self.hypernet != "none" and self.cost == "none":
            raise HwnasError("a λ-hypernet needs a cost: pass --table T.csv, or --cost params|flops")
        if self.sampling not in LAMBDA_SAMPLING:
            raise HwnasError(f"unknown --lambda-sampling {self.sampling!r}; choose {', '.join(LAMBDA_SAMPLING)}")
        if not (self.lam >= 0 and math.isfinite(self.lam)):  # NaN fails every comparison
            raise HwnasError(f"--lambda {self.lam}: λ must be a finite number ≥ 0")
        if self.lambda_max is not None and not (self.lambda_max > 0 and math.isfinite(self.lambda_max)):
            raise HwnasError(f"--lambda-max {self.lambda_max}: Λ must be 'auto' or a finite number > 0")
        if not (self.lambda_margin > 0 and math.isfinite(self.lambda_margin)):
            raise HwnasError(f"the Λ margin must be a positive number, got {self.lambda_margin}")
        if self.samples < 1 or self.eval_batches < 1 or self.warmup_epochs < 0:
            raise HwnasError("--lambda-samples and evaluation batches must be positive, warm-up epochs non-negative")
        if not 0.0 <= self.zero_share < 1.0:
            raise HwnasError(f"--lambda-zero-share {self.zero_share}: the share of steps at λ = 0 must be in [0, 1)")

    @property
    def active(self) -> bool:
        return self.cost != "none"

    @property
    def needs_lambda_max(self) -> bool:
        return self.hypernet != "none"

    @property
    def none_excluded(self) -> bool:
        return self.active if self.exclude_none is None else self.exclude_none

    @property
    def allowed_ops(self) -> list[int]:
        """Indices of the candidate ops (into PRIMITIVES)."""
        from hwnas.spaces.ops import PRIMITIVES  # torch: only once a search is built

        none = PRIMITIVES.index("none")
        return [i for i in range(len(PRIMITIVES)) if not (self.none_excluded and i == none)]


@dataclass(frozen=True)
class SearchConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    layers: int = 5
    channels: int = 8
    batch_size: int = 64
    epochs: int = 10
    seed: int = 0
    relax: RelaxConfig = field(default_factory=RelaxConfig)
    arch_grad: str = "first"
    w_lr: float = 0.025           # SGD for the network weights, cosine-annealed to w_lr_min
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    a_lr: float | None = None     # Adam for α (or the λ-hypernet); None: `auto_arch_lr` of the run's length
    a_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    augment: bool = False         # DARTS searches without augmentation
    device: str = "auto"
    channels_last: bool | None = None   # None: the measured default for the device (hwnas.runtime)
    fused: bool = True                  # fused per-source cell execution (hwnas.spaces.fused); False: per-edge reference
    partial_channels: int = 1           # K: PC-DARTS, 1/K of each edge's channels through its ops (+ edge norm.); 1: off
    amp: bool | None = None
    max_steps_per_epoch: int | None = None  # cap for quick runs and benchmarks
    control: ControlConfig = field(default_factory=ControlConfig)  # cost term, λ, λ-hypernet (control.py)
    hyper_sigma: float = 0.5      # hyper-*: std of the α perturbation φ is fitted over (hyperdarts.py)
    hyper_lr: float = 1e-3        # hyper-*: Adam for φ (scale-free steps: φ's parts differ widely in scale)

    def __post_init__(self) -> None:
        if self.arch_grad not in ARCH_GRADS:
            raise HwnasError(f"unknown --arch-grad {self.arch_grad!r}; choose one of {', '.join(ARCH_GRADS)}")
        for name in ("layers", "channels", "batch_size"):
            if getattr(self, name) < 1:
                raise HwnasError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise HwnasError(f"--epochs must be non-negative, got {self.epochs}")
        if self.layers < 3:
            raise HwnasError(f"--layers must be at least 3 (two reduction cells and a normal one), got {self.layers}")
        if self.partial_channels < 1 or self.channels % self.partial_channels:
            raise HwnasError(f"--partial-channels {self.partial_channels} must be at least 1 and divide --channels "
                             f"{self.channels} (each edge's ops get channels/K of them)")
        if self.a_lr is not None and not (self.a_lr > 0 and math.isfinite(self.a_lr)):
            raise HwnasError(f"--arch-lr must be a positive number, got {self.a_lr}")
        if self.hyper_sigma < 0 or self.hyper_lr <= 0:
            raise HwnasError("the HyperDARTS perturbation σ must be non-negative and its learning rate positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        d = dict(d)
        d["relax"] = RelaxConfig(**d.get("relax", {}))
        control = dict(d.get("control", {}))
        control.setdefault("zero_share", 0.0)  # runs made before it searched over [0, Λ] from the first step
        control.setdefault("lambda_margin", 2.0)  # and estimated Λ with margin 2
        d["control"] = ControlConfig(**control)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    model: str = "darts"               # darts (a genotype's network) or resnet18 (torchvision, small stem ≤ 64 px)
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    epochs: int = 20
    layers: int = 8
    channels: int = 16
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    auxiliary: bool = False
    auxiliary_weight: float = 0.4
    cutout: bool = False
    cutout_length: int | None = None   # None: half the image side (16 px on CIFAR, as in DARTS)
    drop_path_prob: float = 0.2
    seed: int = 0
    device: str = "auto"
    channels_last: bool | None = None
    amp: bool | None = None

    def __post_init__(self) -> None:
        if self.model not in TRAIN_MODELS:
            raise HwnasError(f"--model {self.model!r}: choose one of {', '.join(TRAIN_MODELS)}")
        if self.epochs < 0:
            raise HwnasError(f"--epochs must be non-negative, got {self.epochs}")
        if self.layers < 3:
            raise HwnasError(f"--layers must be at least 3, got {self.layers}")
        if self.channels < 1 or self.batch_size < 1:
            raise HwnasError("--channels and --batch-size must be at least 1")
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise HwnasError(f"--drop-path-prob must be in [0, 1), got {self.drop_path_prob}")


CHANNEL_MULTIPLES = (1, 2, 4, 8, 16, 32, 64)   # ResNet18's fixed widths (stem 64, block outputs 64–512) are multiples


def check_channel_multiple(multiple: int) -> int:
    """`multiple` if it is one of CHANNEL_MULTIPLES, else HwnasError: the widths pruning never changes are
    multiples of N only when N divides 64 (`hwnas.spaces.gated_resnet`)."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple not in CHANNEL_MULTIPLES:
        raise HwnasError(f"--channel-multiple {multiple!r}: choose one of {', '.join(map(str, CHANNEL_MULTIPLES))} "
                         f"(a divisor of 64, ResNet18's smallest fixed width)")
    return multiple


LAMBDA_IMAGES = 1024    # Λ's evaluations: the first 1,024 validation images (the MNIST ResNet18: Λ 1.294 against
#                         1.307 on all 4,167, in 3 min 51 s instead of 24 min)
EMPIRICAL_POINTS = 6    # fixed-λ fits when they set Λ (--lambda-max empirical)


@dataclass(frozen=True)
class PruneConfig:
    kind: str = "prune"                 # tells run directories of `hwnas prune` from search runs
    model: str = "resnet18"
    weights: str = "train"              # PATH (state dict) | imagenet | train
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    table: str = ""                     # resnet18 lookup table (hwnas profile --space resnet18)
    lambda_max: float | None = None     # Λ; None: from `lambda_max_from`
    lambda_max_from: str = "theorem"    # theorem (Theorem 1, with its recorded fallback) | empirical (fixed-λ fits)
    hypernet: str = "linear"            # linear | mlp
    sampling: str = "log-uniform"       # λ per step: uniform or log-uniform over [0, Λ] (hwnas.prune.prune: why log)
    epochs: int = 5
    steps_per_epoch: int | None = None  # cap on phase-2 steps per epoch (None: one pass over the validation half)
    batch_size: int = 32
    lr: float | None = None             # Adam, hypernet; None: LOGIT_TRAVEL / phase-2 steps (`Pruner.hypernet_lr`)
    finetune: bool = False
    finetune_lr: float = 1e-3           # SGD, weights (with finetune)
    bn: str = "adapt"                   # adapt: fit with batch-statistics BN, re-estimate BN of every pruned network
    #                                     (hwnas.prune.adapt) | frozen: the intact network's running statistics
    init_logit: float = 3.0             # phase 1 starts with this margin on the "on" choice at λ = 0 ...
    phase1_steps: int = 200             # ... and fits λ = 0 until Gumbel samples reproduce the pretrained accuracy
    phase1_tolerance: float = 0.01      #     within this (mean of the last 10 sampled batches), or this many steps
    lambda_margin: float = 2.0          # Λ (auto) = margin × the λ at which the cheapest valid gate set becomes optimal
    tau_start: float = 2.0              # Gumbel temperature, annealed exponentially ...
    tau_end: float = 0.5
    hard: bool = True                   # straight-through one-hot gates in the forward pass
    pretrain_epochs: int = 3            # weights=train / imagenet
    pretrain_batch_size: int = 64
    pretrain_lr: float = 0.025
    lambda_samples: int = 32            # valid gate sets evaluated for S (Theorem 1)
    eval_samples: int | None = None     # validation samples per evaluation (None: the whole validation half)
    lambda_images: int = LAMBDA_IMAGES  # Λ's evaluations (Theorem 1's gate sets, the fixed-λ fits) on the first N of
    #                                     those (0: all of them); 1,024 of the MNIST run's 4,167 gave Λ within 1 %
    empirical_points: int | None = None  # fixed-λ fits of the empirical Λ (None: EMPIRICAL_POINTS with
    #                                      lambda_max_from empirical, else 0: with Λ auto they are only recorded)
    empirical_steps: int = 30
    empirical_lr: float = 0.2           # Adam on fixed logits: must move them past init_logit within the steps
    empirical_min: float = 1e-3         # the fixed-λ grid: Λ_ref · geomspace(min, max)
    empirical_max: float = 10.0
    pareto_points: int = 9
    channel_multiple: int = 1           # kept inner channels a multiple of this (1: any; the quarter widths are
    #                                     multiples of 16 already, hwnas.spaces.gated_resnet)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.model not in PRUNE_MODELS:
            raise HwnasError(f"--model {self.model!r}: pruning is implemented for {', '.join(PRUNE_MODELS)}")
        if self.hypernet not in PRUNE_HYPERNETS:
            raise HwnasError(f"--hypernet {self.hypernet!r}: choose one of {', '.join(PRUNE_HYPERNETS)}")
        if self.sampling not in LAMBDA_SAMPLING:
            raise HwnasError(f"--lambda-sampling {self.sampling!r}: choose one of {', '.join(LAMBDA_SAMPLING)}")
        if self.bn not in ("adapt", "frozen"):
            raise HwnasError(f"bn {self.bn!r}: choose adapt or frozen")
        check_channel_multiple(self.channel_multiple)
        if not self.table:
            raise HwnasError("pruning needs a resnet18 latency table: --table T.csv (hwnas profile --space resnet18)")
        if self.lambda_max_from not in ("theorem", "empirical"):
            raise HwnasError(f"Λ from {self.lambda_max_from!r}: choose theorem or empirical")
        if self.lambda_max_from == "empirical" and self.empirical_fits < 2:
            raise HwnasError("--lambda-max empirical needs --empirical-points ≥ 2")
        if self.lambda_max is not None and not (self.lambda_max > 0 and math.isfinite(self.lambda_max)):
            raise HwnasError(f"--lambda-max {self.lambda_max}: Λ must be 'auto', 'empirical' or a finite number > 0")
        positive = ("epochs", "batch_size", "lambda_samples", "pareto_points", "pretrain_batch_size")
        bad = [f for f in positive if getattr(self, f) < 1]
        bad += [f for f in ("steps_per_epoch", "eval_samples") if getattr(self, f) is not None and getattr(self, f) < 1]
        bad += [f for f in ("pretrain_epochs", "empirical_steps", "lambda_images") if getattr(self, f) < 0]
        bad += ["empirical_points"] if self.empirical_points is not None and self.empirical_points < 0 else []
        if bad:
            raise HwnasError(f"{', '.join('--' + b.replace('_', '-') for b in bad)} out of range")
        if self.pareto_points < 2:
            raise HwnasError("--pareto-points must be at least 2")
        if self.phase1_steps < 0 or not 0 <= self.phase1_tolerance < 1:
            raise HwnasError("phase 1 needs steps ≥ 0 and a tolerance in [0, 1)")
        if not (self.lambda_margin > 0 and math.isfinite(self.lambda_margin)):
            raise HwnasError(f"--lambda-margin must be a positive number, got {self.lambda_margin}")
        if not ((self.lr is None or self.lr > 0) and self.finetune_lr > 0 and self.tau_start > 0 and self.tau_end > 0):
            raise HwnasError("learning rates and temperatures must be positive")

    @property
    def relax(self) -> RelaxConfig:
        return RelaxConfig("gumbel", hard=self.hard, tau_start=self.tau_start, tau_end=self.tau_end)

    @property
    def empirical_fits(self) -> int:
        """The fixed-λ fits the run makes: `empirical_points`, or by default EMPIRICAL_POINTS where they set Λ
        (`--lambda-max empirical`) and none where they would only be recorded."""
        if self.empirical_points is not None:
            return self.empirical_points
        return EMPIRICAL_POINTS if self.lambda_max_from == "empirical" else 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        known = {f.name for f in fields(cls)}
        # runs made before `bn` existed were fitted and evaluated with frozen statistics; before `lambda_images`,
        # Λ was evaluated on every evaluation image
        d = {"bn": "frozen", "lambda_images": 0, **d}
        return cls(**{k: v for k, v in d.items() if k in known})

"""Training a discrete network of a genotype from scratch (the DARTS "augment" stage) and evaluating it.

Recipe as in DARTS: SGD with momentum, cosine learning rate, weight decay, gradient clipping,
an auxiliary head weighted 0.4, cutout, and drop-path ramped linearly to its final value.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hwnas.data import DeviceLoader, dataset_shape, default_augment, load_dataset
from hwnas.errors import HwnasError
from hwnas.evaluation import RunningStats, evaluate
from hwnas.runs import RunDir
from hwnas.runtime import autocast_dtype, memory_format, resolve_device
from hwnas.spaces.genotype import Genotype
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig, count_parameters


@dataclass(frozen=True)
class TrainConfig:
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
        if self.epochs < 0:
            raise HwnasError(f"--epochs must be non-negative, got {self.epochs}")
        if self.layers < 3:
            raise HwnasError(f"--layers must be at least 3, got {self.layers}")
        if self.channels < 1 or self.batch_size < 1:
            raise HwnasError("--channels and --batch-size must be at least 1")
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise HwnasError(f"--drop-path-prob must be in [0, 1), got {self.drop_path_prob}")


@dataclass
class TrainResult:
    params: int                 # without the auxiliary head, as DARTS reports
    test_loss: float
    test_acc: float
    metrics: list[dict]
    model: DiscreteNetwork


def build_network(genotype: Genotype, cfg: TrainConfig) -> DiscreteNetwork:
    """The discrete network for `genotype` on `cfg.dataset` (its channels and classes)."""
    in_channels, _, _, num_classes = dataset_shape(cfg.dataset, cfg.data_dir)
    return DiscreteNetwork(genotype, NetworkConfig(channels=cfg.channels, layers=cfg.layers, num_classes=num_classes,
                                                   in_channels=in_channels, auxiliary=cfg.auxiliary))


def train_network(genotype: Genotype, cfg: TrainConfig, out: str | Path | None = None,
                  on_start: Callable[[int], None] | None = None,
                  on_step: Callable[[int, int], None] | None = None,
                  on_epoch_end: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `genotype` from scratch and evaluate it on the test split; `on_start(params)` runs before training."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    mf = memory_format(device, cfg.channels_last)
    model = build_network(genotype, cfg).to(device, memory_format=mf)
    params = count_parameters(model)
    if on_start is not None:
        on_start(params)
    if cfg.epochs == 0:  # build and count only: no data needed
        return TrainResult(params, float("nan"), float("nan"), [], model)
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    info = splits.info
    run = RunDir.create(out, {"genotype": str(genotype), **asdict(cfg)}) if out is not None else None

    cutout = (cfg.cutout_length or max(1, info.height // 2)) if cfg.cutout else 0
    kw = dict(device=device, channels_last=mf == torch.channels_last)
    train_loader = DeviceLoader(splits.x_train, splits.y_train, info, cfg.batch_size, shuffle=True,
                                augment=default_augment(info, cutout=cutout), generator_seed=cfg.seed * 1000 + 5, **kw)
    test_loader = DeviceLoader(splits.x_test, splits.y_test, info, 256, shuffle=False, **kw)
    opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1), eta_min=cfg.lr_min)
    amp = autocast_dtype(device, cfg.amp)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            return model(x).float()

    metrics: list[dict] = []
    for epoch in range(cfg.epochs):
        model.train()
        model.drop_path_prob = cfg.drop_path_prob * epoch / cfg.epochs
        stats = RunningStats()
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(train_loader):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                logits, aux = model.forward_with_aux(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y)
            if aux is not None:
                loss = loss + cfg.auxiliary_weight * F.cross_entropy(aux.float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            stats.update(F.cross_entropy(logits.detach(), y), logits, y)
            if on_step is not None:
                on_step(i + 1, len(train_loader))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        lr = sched.get_last_lr()[0]
        sched.step()
        model.eval()
        test_loss, test_acc = evaluate(logits_of, test_loader)
        train_loss, train_acc = stats.result()
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
               "test_acc": test_acc, "lr": lr, "steps": len(train_loader), "epoch_seconds": seconds}
        metrics.append(row)
        if run is not None:
            run.write_metrics(metrics)
        if on_epoch_end is not None:
            on_epoch_end(row)

    model.eval()
    test_loss, test_acc = evaluate(logits_of, test_loader)
    if run is not None:
        run.write_json("result.json", {"params": params, "test_loss": test_loss, "test_acc": test_acc,
                                       "genotype": str(genotype)})
        torch.save(model.state_dict(), run.file("model.pt"))
    return TrainResult(params, test_loss, test_acc, metrics, model)

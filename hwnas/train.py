"""Training a discrete network from scratch — a genotype's (the DARTS "augment" stage) or
torchvision's ResNet18 (`model="resnet18"`, the network `hwnas prune` starts from) — and evaluating it.

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

from hwnas import distributed as dist
from hwnas.config import TRAIN_MODELS as MODELS  # noqa: F401
from hwnas.config import TrainConfig  # its home; imported from here too
from hwnas.data import DeviceLoader, Splits, dataset_shape, default_augment, load_dataset
from hwnas.errors import HwnasError
from hwnas.evaluation import RunningStats, evaluate
from hwnas.runs import CONFIG, RunDir, atomic_write
from hwnas.runtime import autocast_dtype, memory_format, onednn_safe_format, resolve_device
from hwnas.spaces.genotype import Genotype
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig, count_parameters



@dataclass
class TrainResult:
    params: int                 # without the auxiliary head, as DARTS reports
    test_loss: float
    test_acc: float
    metrics: list[dict]
    model: torch.nn.Module


def resnet18_space(dataset: str, data_dir: str | None = None, batch: int = 1):
    """The resnet18 `SpaceConfig` of a dataset (its channels, size, classes): what its tables must measure."""
    from hwnas.latency.space import SpaceConfig

    in_channels, h, w, num_classes = dataset_shape(dataset, data_dir)
    return SpaceConfig(space="resnet18", input_h=h, input_w=w, in_channels=in_channels, num_classes=num_classes,
                       batch=batch)


def build_network(genotype: Genotype | None, cfg: TrainConfig) -> torch.nn.Module:
    """The discrete network for `genotype`, or torchvision's resnet18, on `cfg.dataset` (its channels and classes)."""
    if cfg.model == "resnet18":
        from hwnas.latency.resnet_keys import torchvision_resnet18

        return torchvision_resnet18(resnet18_space(cfg.dataset, cfg.data_dir))
    if genotype is None:
        raise HwnasError("training a darts network needs a --genotype")
    in_channels, _, _, num_classes = dataset_shape(cfg.dataset, cfg.data_dir)
    return DiscreteNetwork(genotype, NetworkConfig(channels=cfg.channels, layers=cfg.layers, num_classes=num_classes,
                                                   in_channels=in_channels, auxiliary=cfg.auxiliary))


def _forward_with_aux(model: torch.nn.Module, x: torch.Tensor):
    if isinstance(model, DiscreteNetwork):
        return model.forward_with_aux(x)
    return model(x), None


def train_network(genotype: Genotype | None, cfg: TrainConfig, out: str | Path | None = None,
                  on_start: Callable[[int], None] | None = None,
                  on_step: Callable[[int, int], None] | None = None,
                  on_epoch_end: Callable[[dict], None] | None = None, splits: Splits | None = None,
                  initial_state: dict | None = None, resume: bool = False) -> TrainResult:
    """Train `genotype` (or cfg.model) and evaluate it on the test split; `on_start(params)` runs before
    training. `splits` replaces the dataset's own (e.g. a part of its train split held out elsewhere);
    `initial_state` starts from those weights (entries whose shape does not fit keep their initialisation).

    With `out`, the run directory gets config.json, metrics.csv and a checkpoint after every epoch
    (weights, optimiser, schedule, the loader's and torch's RNG), then result.json and model.pt;
    `resume` continues it from its last finished epoch (`resume_config` reads its genotype and config).

    Started by torchrun with several processes, it trains data-parallel (`hwnas.distributed`): each process
    takes its slice of every batch, gradients are averaged, only rank 0 writes `out`. Drop-path masks are drawn
    per process (seeded by epoch and rank), so with drop-path a run matches one process in distribution only."""
    if out is not None and not resume:
        RunDir.check_new(out)  # before any work: a taken --out is refused at once
    device = dist.device_for(resolve_device(cfg.device))
    with dist.session(device):
        return _train(genotype, cfg, device, out, on_start, on_step, on_epoch_end, splits, initial_state, resume)


def _train(genotype, cfg: TrainConfig, device: torch.device, out, on_start, on_step, on_epoch_end, splits,
           initial_state, resume: bool) -> TrainResult:
    torch.manual_seed(cfg.seed)
    mf = memory_format(device, cfg.channels_last)
    model = build_network(genotype, cfg)
    if initial_state is not None:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in initial_state.items() if k in own and own[k].shape == v.shape},
                              strict=False)
    mf = onednn_safe_format(model, device, mf)
    model = model.to(device, memory_format=mf)
    params = count_parameters(model)
    if on_start is not None:
        on_start(params)
    if cfg.epochs == 0:  # build and count only: no data needed
        return TrainResult(params, float("nan"), float("nan"), [], model)
    splits = splits or load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    info = splits.info
    name = str(genotype) if cfg.model == "darts" else cfg.model

    cutout = (cfg.cutout_length or max(1, info.height // 2)) if cfg.cutout else 0
    kw = {"device": device, "channels_last": mf == torch.channels_last}
    train_loader = DeviceLoader(splits.x_train, splits.y_train, info, cfg.batch_size, shuffle=True, shard=True,
                                augment=default_augment(info, cutout=cutout), generator_seed=cfg.seed * 1000 + 5, **kw)
    test_loader = DeviceLoader(splits.x_test, splits.y_test, info, 256, shuffle=False, **kw)
    opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1), eta_min=cfg.lr_min)
    amp = autocast_dtype(device, cfg.amp)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            return model(x).float()

    metrics: list[dict] = []
    run, first = None, 0
    if out is not None:  # made only now that the data and the network are built: bad input leaves nothing
        dist.barrier()  # every process has checked a new `out` before rank 0 creates the run there
        run = RunDir.create(out, {"genotype": name, **asdict(cfg)}, resume=resume)
        state = run.load_checkpoint(device, keys=_STATE) if resume else None
        if state is not None:
            first, metrics = _load_state(run, state, model, opt, sched, train_loader)
    n_train = len(splits.x_train)
    for epoch in range(first, cfg.epochs):
        model.train()
        if isinstance(model, DiscreteNetwork):
            model.drop_path_prob = cfg.drop_path_prob * epoch / cfg.epochs
        if dist.is_distributed():  # independent drop-path masks on each process's slice, reproducible on resume
            torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + dist.rank())
        stats = RunningStats()
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(train_loader):
            opt.zero_grad(set_to_none=True)
            with dist.synced_batch_norm():  # under torchrun: the global batch's BN statistics
                with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                    logits, aux = _forward_with_aux(model, x)
                logits = logits.float()
                loss = F.cross_entropy(logits, y)
                if aux is not None:
                    loss = loss + cfg.auxiliary_weight * F.cross_entropy(aux.float(), y)
                # under torchrun the last batch may not split evenly: each slice's loss is weighted by its share
                # of the global batch (× processes, undone by the average), so the average is the global gradient
                share = len(y) * dist.world_size() / min(cfg.batch_size, n_train - i * cfg.batch_size)
                (loss * share if share != 1 else loss).backward()
            dist.average_gradients(model.parameters())
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
        dist.average_buffers(model)  # one BN state on every process: evaluation and checkpoint agree
        model.eval()
        test_loss, test_acc = evaluate(logits_of, test_loader)
        train_loss, train_acc = dist.reduce_stats(stats).result()
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
               "test_acc": test_acc, "lr": lr, "steps": len(train_loader), "epoch_seconds": seconds}
        metrics.append(row)
        if run is not None:  # checkpoint first: metrics.csv can always be rebuilt from it
            run.save_checkpoint({"epoch": epoch + 1, "model": model.state_dict(), "opt": opt.state_dict(),
                                 "sched": sched.state_dict(), "train_loader": train_loader.state_dict(),
                                 "rng": torch.get_rng_state(), "metrics": metrics})
            run.write_metrics(metrics)
        if on_epoch_end is not None:
            on_epoch_end(row)

    model.eval()
    test_loss, test_acc = evaluate(logits_of, test_loader)
    if run is not None:
        run.write_json("result.json", {"params": params, "test_loss": test_loss, "test_acc": test_acc,
                                       "genotype": name})
        atomic_write(run.file("model.pt"), lambda f: torch.save(model.state_dict(), f))
    return TrainResult(params, test_loss, test_acc, metrics, model)


_STATE = ("epoch", "model", "opt", "sched", "train_loader", "rng", "metrics")


def _load_state(run: RunDir, state: dict, model, opt, sched, train_loader) -> tuple[int, list[dict]]:
    """Restore a training checkpoint; (epochs done, their metrics)."""
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        train_loader.load_state_dict(state["train_loader"])
        torch.set_rng_state(state["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError):
        raise HwnasError(f"{run.file('checkpoint.pt')} does not fit the run in {run.path} (another network); remove "
                         f"it to restart the run, or choose another --out") from None
    return int(state["epoch"]), list(state["metrics"])


def resume_config(out: str | Path) -> tuple[Genotype | None, TrainConfig]:
    """The genotype and config of the training run in `out` (what `hwnas train --out OUT --resume` continues)."""
    run = RunDir(out)
    if not run.file(CONFIG).is_file():
        raise HwnasError(f"--resume: {out} holds no {CONFIG} of a training run; start one with hwnas train --out {out}")
    d = run.read_json(CONFIG)
    if "genotype" not in d or "model" not in d:
        raise HwnasError(f"--resume: {out} is not a training run (its {CONFIG} has no genotype/model); use the "
                         f"command that made it")
    known = {f for f in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{k: v for k, v in d.items() if k in known})
    return (Genotype.parse(d["genotype"]) if cfg.model == "darts" else None), cfg

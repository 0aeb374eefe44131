"""ResNet18 gate pruning with performance control (`hwnas prune`): Algorithm 1 of the paper.

1. The pretrained network: a checkpoint (`weights=PATH`), torchvision's ImageNet weights
   (`imagenet`, adapted to the dataset by `pretrain_epochs` of fine-tuning) or one trained
   here (`train`) on the weights half of the train split (`hwnas.data.search_split`). Its
   inner channels are put in importance order once (`reorder_by_importance`, exact). A network
   of another shape, or one near chance on the validation half, is refused (`check_start`).
2. Λ: Theorem 1 and the empirical fixed-λ approximation (`hwnas.prune.prune_lambda`).
3. Phase 1: the λ-hypernet is initialised to the intact network at λ = 0 (`gate_hypernet`);
   the gated network at λ = 0 is checked to have exactly the pretrained accuracy.
4. Phase 2: each step samples λ ∈ [0, Λ], γ = Gumbel-softmax(G(λ/Λ)) on Γ_valid (`gate_sampling`:
   no sample and no derived gate set is broken) and minimises
   L_val(γ) + λ·Tᵀγ on the held-out half of the train split. Weights are frozen (BN in eval
   mode throughout); `finetune` also takes an SGD step on the weights (train half) per step.

Run directory: config.json, pretrained.pt/.json, lambda_max.json, metrics.csv, checkpoint.pt
(every epoch, atomic; `resume` continues it), then pareto.csv and plots/ (`prune_pareto`).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.config import PRUNE_HYPERNETS, PRUNE_MODELS as MODELS, PruneConfig  # noqa: F401  (their home)
from hwnas.data import DeviceLoader, Splits, default_augment, load_dataset, search_split
from hwnas.errors import HwnasError
from hwnas.prune.gate_cost import GateCost
from hwnas.prune.gate_hypernet import GateHypernet, hypernet_input
from hwnas.prune.gate_sampling import argmax_gates, relax_gates
from hwnas.search.hypernet import sample_lambda
from hwnas.search.relax import RelaxConfig, temperature
from hwnas.spaces.gated_resnet import GatedResNet18, GateSet, reorder_by_importance



class PruneData:
    """The dataset cut for pruning: weights half (pretraining, fine-tuning), validation half (L_val, Λ,
    accuracies), test split; loaders on the compute device."""

    def __init__(self, cfg: PruneConfig, device: torch.device):
        splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        self.info = splits.info
        (self.x_w, self.y_w), (self.x_v, self.y_v) = search_split(splits.x_train, splits.y_train, cfg.seed)
        self.x_test, self.y_test = splits.x_test, splits.y_test
        n_eval = min(cfg.eval_samples or len(self.x_v), len(self.x_v))
        kw = {"device": device}
        self.val = DeviceLoader(self.x_v, self.y_v, self.info, cfg.batch_size, shuffle=True, drop_last=True,
                                generator_seed=cfg.seed * 1000 + 11, **kw)
        self.weights = DeviceLoader(self.x_w, self.y_w, self.info, cfg.batch_size, shuffle=True, drop_last=True,
                                    augment=default_augment(self.info), generator_seed=cfg.seed * 1000 + 13, **kw)
        self.eval = DeviceLoader(self.x_v[:n_eval], self.y_v[:n_eval], self.info, 256, shuffle=False, **kw)
        self.test = DeviceLoader(self.x_test, self.y_test, self.info, 256, shuffle=False, **kw)
        if len(self.val) == 0:
            raise HwnasError(f"the validation half has {len(self.x_v)} samples, fewer than --batch-size "
                             f"{cfg.batch_size}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.info.channels, self.info.height, self.info.width

    def pretrain_splits(self) -> Splits:
        return Splits(self.info, self.x_w, self.y_w, self.x_test, self.y_test)


def _imagenet_state() -> dict:
    from torchvision.models import ResNet18_Weights

    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except (OSError, RuntimeError, ValueError) as e:  # URLError, HTTPError, SSL, timeouts: not downloadable here
        raise HwnasError(f"--weights imagenet: torchvision's ResNet18 ImageNet weights could not be downloaded "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); offline, pass "
                         f"--weights PATH (a state dict) or --weights train") from None


def load_state(path: str) -> dict:
    """A ResNet18 state dict from a file: a plain state dict, or a dict holding one under 'model'/'state_dict'."""
    from hwnas.runs import load_torch_file

    state = load_torch_file(path, "a state dict (--weights)", "weights file")
    if isinstance(state, dict):
        state = state.get("model", state.get("state_dict", state))
    if not isinstance(state, dict):
        raise HwnasError(f"--weights {path} does not hold a state dict")
    return state


def pretrained_model(cfg: PruneConfig, data: PruneData, on_step=None, on_epoch_end=None) -> tuple[nn.Module, dict]:
    """The network to prune (CPU, eval mode, inner channels in importance order) and where it came from."""
    from hwnas.latency.resnet_keys import torchvision_resnet18
    from hwnas.train import TrainConfig, resnet18_space, train_network

    space = resnet18_space(cfg.dataset, cfg.data_dir)
    source: dict = {"weights": cfg.weights}
    if cfg.weights in ("train", "imagenet"):
        initial = _imagenet_state() if cfg.weights == "imagenet" else None
        if cfg.pretrain_epochs == 0:
            raise HwnasError(f"--weights {cfg.weights} needs --pretrain-epochs ≥ 1")
        tcfg = TrainConfig(model="resnet18", dataset=cfg.dataset, data_dir=cfg.data_dir, epochs=cfg.pretrain_epochs,
                           batch_size=cfg.pretrain_batch_size, lr=cfg.pretrain_lr, drop_path_prob=0.0, seed=cfg.seed,
                           device=cfg.device, amp=False)
        result = train_network(None, tcfg, splits=data.pretrain_splits(), on_step=on_step, on_epoch_end=on_epoch_end,
                               initial_state=initial)
        model = result.model.cpu()
        source.update(pretrain_epochs=cfg.pretrain_epochs, trained_on="weights half of the train split")
    else:
        model = torchvision_resnet18(space)
        state = load_state(cfg.weights)
        mismatch = state_mismatch(model.state_dict(), state)
        if mismatch:
            raise HwnasError(f"--weights {cfg.weights} is not a ResNet18 for {cfg.dataset} "
                             f"({space.in_channels} input channel(s), {space.num_classes} classes, "
                             f"{'small' if space.small_stem else 'ImageNet'} stem): {mismatch}")
        model.load_state_dict(state)
    model = reorder_by_importance(model.eval())
    return model, source


def state_mismatch(own: dict, state: dict) -> str:
    """Why `state` does not fit a network whose state dict is `own` ('' when it fits): classes, input channels,
    stem, or the first differing tensors, in words."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    fc, conv = shapes.get("fc.weight"), shapes.get("conv1.weight")
    if fc is not None and len(fc) == 2 and fc != tuple(own["fc.weight"].shape):
        return f"its classifier has {fc[0]} classes, the dataset {own['fc.weight'].shape[0]}"
    if conv is not None and len(conv) == 4 and conv != tuple(own["conv1.weight"].shape):
        want = tuple(own["conv1.weight"].shape)
        if conv[1] != want[1]:
            return f"its first convolution takes {conv[1]} input channel(s), the dataset has {want[1]}"
        return f"its stem convolution is {conv[2]}×{conv[3]}, this dataset's ResNet18 has {want[2]}×{want[3]}"
    missing = [k for k in own if k not in shapes]
    unexpected = [k for k in shapes if k not in own]
    wrong = [f"{k} {shapes[k]} (needs {tuple(own[k].shape)})" for k in own if k in shapes
             and shapes[k] != tuple(own[k].shape)]
    parts = [f"{len(missing)} missing tensor(s) ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})"
             if missing else "",
             f"{len(unexpected)} unexpected tensor(s) ({', '.join(unexpected[:3])}{', …' if len(unexpected) > 3 else ''})"
             if unexpected else "",
             f"{len(wrong)} of another shape ({', '.join(wrong[:2])}{', …' if len(wrong) > 2 else ''})" if wrong else ""]
    return "; ".join(p for p in parts if p)


START_MARGIN = 0.1   # a starting network must be a tenth of the way from chance to 100 % validation accuracy


def check_start(val_acc: float, y_val: torch.Tensor, num_classes: int, what: str) -> None:
    """Refuse a starting network near chance: pruning a network that has learnt nothing finds nothing to keep
    (every λ > 0 then prunes to the cheapest gate set). Chance is the majority class's share of the labels."""
    counts = torch.bincount(y_val.cpu(), minlength=num_classes)
    chance = float(counts.max()) / float(counts.sum())
    need = chance + START_MARGIN * (1.0 - chance)
    if val_acc < need:
        raise HwnasError(f"{what} is at {100 * val_acc:.1f} % validation accuracy, near chance ({100 * chance:.1f} %; "
                         f"pruning needs ≥ {100 * need:.1f} %): train it first (hwnas train --model resnet18, or "
                         f"--weights train with more --pretrain-epochs)")


@torch.no_grad()
def gates_at(hypernet: GateHypernet, lam: float, lambda_max: float, sampling: str) -> GateSet:
    """The deterministic gate set of a trained hypernet at λ (argmax of its logits at λ/Λ)."""
    device = next(hypernet.parameters()).device
    return argmax_gates(*hypernet(torch.tensor([hypernet_input(lam / lambda_max, sampling)], device=device)))


class GateFit:
    """One relaxed step of L_val(γ) + λ·Tᵀγ for gate logits from `logits_fn(λ/Λ)`; shared by phase 2
    and the fixed-λ fits of the empirical Λ."""

    def __init__(self, gated: GatedResNet18, cost: GateCost, relax_cfg: RelaxConfig, generator: torch.Generator):
        self.gated, self.cost, self.relax_cfg, self.generator = gated, cost, relax_cfg, generator

    def loss(self, logits_fn: Callable, x: torch.Tensor, y: torch.Tensor, lam: float, lam_input: float,
             tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(objective, cross-entropy, expected cost) of one batch; `lam_input` is what the hypernet sees of λ."""
        device = x.device
        bl, sl = logits_fn(torch.tensor([lam_input], device=device))
        wb, ws = relax_gates(bl, sl, self.relax_cfg, tau, self.generator)
        ce = F.cross_entropy(self.gated(x, wb, ws), y)
        expected = self.cost.expected(wb, ws)
        return ce + lam * expected, ce.detach(), expected.detach()


class Pruner:
    """The phase-2 fit: λ-hypernet, optimiser, λ sampler, state for checkpoints."""

    def __init__(self, cfg: PruneConfig, model: nn.Module, cost: GateCost, lambda_max: float, data: PruneData,
                 device: torch.device):
        self.cfg, self.data, self.device, self.lambda_max = cfg, data, device, float(lambda_max)
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(cfg.finetune)
        self.gated = GatedResNet18(self.model).to(device)
        self.cost = cost.to(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.hypernet = GateHypernet(cfg.hypernet, cfg.init_logit, gen).to(device)   # phase 1
        self.opt = torch.optim.Adam(self.hypernet.parameters(), lr=cfg.lr)
        self.w_opt = torch.optim.SGD(self.model.parameters(), lr=cfg.finetune_lr, momentum=0.9) if cfg.finetune else None
        self.lam_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 17)
        self.fit = GateFit(self.gated, self.cost, cfg.relax, torch.Generator().manual_seed(cfg.seed * 1000 + 19))
        self.epoch = 0
        self.metrics: list[dict] = []

    def steps_per_epoch(self) -> int:
        n = len(self.data.val)
        return min(n, self.cfg.steps_per_epoch) if self.cfg.steps_per_epoch else n

    def gates(self, lam: float) -> GateSet:
        """The deterministic gate set at λ (argmax of the hypernet's logits)."""
        return gates_at(self.hypernet, lam, self.lambda_max, self.cfg.sampling)

    def train_epoch(self, on_step: Callable[[int, int], None] | None = None) -> dict:
        cfg, n = self.cfg, self.steps_per_epoch()
        total_steps = cfg.epochs * n
        sums = {"objective": 0.0, "val_ce": 0.0, "expected_cost_ms": 0.0, "lambda": 0.0}
        weights_iter = iter(self.data.weights) if self.w_opt is not None else None
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(self.data.val):
            if i >= n:
                break
            tau = temperature(cfg.relax, (self.epoch * n + i) / max(total_steps - 1, 1))
            lam = float(sample_lambda(torch.tensor([self.lambda_max]), cfg.sampling, self.lam_gen)[0])
            if self.w_opt is not None:   # fine-tuning: a weights step on the weights half at the same λ
                xw, yw = next(weights_iter, (None, None))
                if xw is None:
                    weights_iter = iter(self.data.weights)
                    xw, yw = next(weights_iter)
                self.w_opt.zero_grad(set_to_none=True)
                F.cross_entropy(self.gated(xw, *self._detached_gates(lam, tau)), yw).backward()
                self.w_opt.step()
            self.opt.zero_grad(set_to_none=True)
            objective, ce, expected = self.fit.loss(self.hypernet, x, y, lam, self._input(lam), tau)
            objective.backward()
            self.opt.step()
            for k, v in zip(sums, (objective.detach(), ce, expected, lam)):
                sums[k] += float(v)
            if on_step is not None:
                on_step(i + 1, n)
        self.epoch += 1
        row = {"epoch": self.epoch, **{k: v / n for k, v in sums.items()}, "tau": tau, "steps": n,
               "epoch_seconds": time.perf_counter() - t0}
        for name, frac in (("0", 0.0), ("half", 0.5), ("max", 1.0)):
            g = self.gates(frac * self.lambda_max)
            row[f"gates_at_{name}"] = g.describe()
            row[f"predicted_ms_at_{name}"] = self.cost.of(g)
        self.metrics.append(row)
        return row

    def _input(self, lam: float) -> float:
        return hypernet_input(lam / self.lambda_max, self.cfg.sampling)

    def _detached_gates(self, lam: float, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            bl, sl = self.hypernet(torch.tensor([self._input(lam)], device=self.device))
            return relax_gates(bl, sl, self.cfg.relax, tau, self.fit.generator)

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "metrics": self.metrics, "hypernet": self.hypernet.state_dict(),
                 "opt": self.opt.state_dict(), "lam_gen": self.lam_gen.get_state(),
                 "gumbel_gen": self.fit.generator.get_state(), "val_loader": self.data.val.state_dict(),
                 "weights_loader": self.data.weights.state_dict(), "lambda_max": self.lambda_max}
        if self.w_opt is not None:
            state.update(model=self.model.state_dict(), w_opt=self.w_opt.state_dict())
        return state

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.metrics = int(s["epoch"]), list(s["metrics"])
        self.hypernet.load_state_dict(s["hypernet"])
        self.opt.load_state_dict(s["opt"])
        self.lam_gen.set_state(s["lam_gen"])
        self.fit.generator.set_state(s["gumbel_gen"])
        self.data.val.load_state_dict(s["val_loader"])
        self.data.weights.load_state_dict(s["weights_loader"])
        if self.w_opt is not None:
            self.model.load_state_dict(s["model"])
            self.w_opt.load_state_dict(s["w_opt"])

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
   mode throughout; with `bn` adapt, the default, each sampled gate set normalises with batch statistics and
   every pruned network evaluated or exported has its BN statistics re-estimated: `hwnas.prune.adapt`);
   `finetune` also takes an SGD step on the weights (train half) per step. λ is drawn log-uniformly by default,
   and the hypernet sees log λ: with re-estimated BN the MNIST ResNet18's networks change at λ/Λ ≈ 0.02–0.15
   (2 × the λ where the cheapest gate set becomes optimal is far past where useful networks end); drawn
   uniformly, nine in ten steps were spent where the answer is the smallest networks, and the front went from
   the intact network at λ/Λ = 1/4 straight to 0.72 ms (34 %); drawn log-uniformly, 4 networks from 6.24 to
   1.75 ms predicted (98.4 → 95.4 % test). (Tried and dropped: Adam with one second moment per tensor, so that
   gates move in proportion to their gradients; with uniform λ it still jumped (2.58 ms at 51 %), with
   log-uniform λ its cheapest network was 1.81 ms at 87.3 %, below per-coordinate Adam's.)

Run directory: config.json, pretrained.pt/.json, lambda_max.json, metrics.csv, checkpoint.pt
(every epoch, atomic; `resume` continues it), then pareto.csv and plots/ (`prune_pareto`).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.config import PRUNE_HYPERNETS, PruneConfig  # noqa: F401  (their home)
from hwnas.data import DeviceLoader, Splits, default_augment, load_dataset, search_split
from hwnas.errors import HwnasError
from hwnas.prune.adapt import CALIBRATION_BATCH, CALIBRATION_SAMPLES, pruned_network
from hwnas.prune.gate_cost import GateCost
from hwnas.prune.gate_hypernet import GateHypernet, hypernet_input
from hwnas.prune.gate_sampling import argmax_gates, gate_probabilities, relax_gates
from hwnas.search.hypernet import sample_lambda
from hwnas.search.relax import RelaxConfig, temperature
from hwnas.spaces.gated_resnet import GatedResNet18, GateSet


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
        n_lam = min(cfg.lambda_images or n_eval, n_eval)   # Λ's evaluations: the first n_lam of `eval`
        self.lambda_eval = self.eval if n_lam == n_eval else \
            DeviceLoader(self.x_v[:n_lam], self.y_v[:n_lam], self.info, 256, shuffle=False, **kw)
        self.calibration = DeviceLoader(self.x_w[:CALIBRATION_SAMPLES], self.y_w[:CALIBRATION_SAMPLES], self.info,
                                        CALIBRATION_BATCH, shuffle=False, **kw)   # BN re-estimation (prune.adapt)
        if len(self.val) == 0:
            raise HwnasError(f"the validation half has {len(self.x_v)} samples, fewer than --batch-size "
                             f"{cfg.batch_size}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.info.channels, self.info.height, self.info.width

    def pretrain_splits(self) -> Splits:
        return Splits(self.info, self.x_w, self.y_w, self.x_test, self.y_test)


@torch.no_grad()
def gates_at(hypernet: GateHypernet, lam: float, lambda_max: float, sampling: str) -> GateSet:
    """The deterministic gate set of a trained hypernet at λ (argmax of its logits at λ/Λ)."""
    device = next(hypernet.parameters()).device
    return argmax_gates(*hypernet(torch.tensor([hypernet_input(lam / lambda_max, sampling)], device=device)))


PHASE1_LR = 0.05      # phase 1 (Adam on b₂): margins grow by about this per step until samples are accurate
LOGIT_TRAVEL = 20.0   # how far (in logits) Adam may move a gate's λ-slope over phase 2: past the phase-1 margins


def hypernet_lr(given: float | None, steps: int) -> float:
    """The hypernet's Adam learning rate: as given, or LOGIT_TRAVEL / phase-2 steps within [0.01, 0.3]. Adam
    moves each logit by about its learning rate per step whatever the gradient's size, so a fixed rate lets a
    short run move no gate past its phase-1 margin (measured: 120 steps at 0.05 left the MNIST ResNet18 intact
    at λ ≤ Λ/2) and a long one overshoot."""
    return float(given) if given is not None else min(max(LOGIT_TRAVEL / max(steps, 1), 0.01), 0.3)


class GateFit:
    """One relaxed step of L_val(γ) + λ·Tᵀγ for gate logits from `logits_fn(λ/Λ)`; shared by phase 2
    and the fixed-λ fits of the empirical Λ."""

    def __init__(self, gated: GatedResNet18, cost: GateCost, relax_cfg: RelaxConfig, generator: torch.Generator):
        self.gated, self.cost, self.relax_cfg, self.generator = gated, cost, relax_cfg, generator

    def loss(self, logits_fn: Callable, x: torch.Tensor, y: torch.Tensor, lam: float, lam_input: float,
             tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(objective, cross-entropy, expected cost) of one batch; `lam_input` is what the hypernet sees of λ.

        The cross-entropy is that of one straight-through Gumbel sample; the cost is the exact expectation
        E[Tᵀγ] under the gates' distribution on Γ_valid (linear in its marginals: no sampling noise), taken
        through `logits_fn.penalty_logits` where it has one (the hypernet: only its λ-dependent part)."""
        lam_t = torch.tensor([lam_input], device=x.device)
        bl, sl = logits_fn(lam_t)
        wb, ws = relax_gates(bl, sl, self.relax_cfg, tau, self.generator)
        ce = F.cross_entropy(self.gated(x, wb, ws), y)
        pen = getattr(logits_fn, "penalty_logits", None)
        expected = self.cost.expected(*gate_probabilities(*(pen(lam_t) if pen is not None else (bl, sl))))
        return ce + lam * expected, ce.detach(), expected.detach()


class Pruner:
    """The phase-2 fit: λ-hypernet, optimiser, λ sampler, state for checkpoints."""

    def __init__(self, cfg: PruneConfig, model: nn.Module, cost: GateCost, lambda_max: float, data: PruneData,
                 device: torch.device):
        self.cfg, self.data, self.device, self.lambda_max = cfg, data, device, float(lambda_max)
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(cfg.finetune)
        self.gated = GatedResNet18(self.model, batch_stats=cfg.bn == "adapt").to(device)
        self.cost = cost.to(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.hypernet = GateHypernet(cfg.hypernet, cfg.init_logit, gen, cfg.channel_multiple).to(device)   # phase 1
        self.lr = hypernet_lr(cfg.lr, cfg.epochs * self.steps_per_epoch())
        # Phase 2 moves only the λ-dependent part: the λ = 0 network is phase 1's (b₂). Trained at every λ, b₂
        # took the loss of the pruned samples at large λ as well (measured: its "full width" margins grew to
        # 7–13 logits in 120 steps), which the λ-slope then had to undo.
        self.opt = torch.optim.Adam([p for n, p in self.hypernet.named_parameters() if n != "net.b2"], lr=self.lr)
        self.w_opt = torch.optim.SGD(self.model.parameters(), lr=cfg.finetune_lr, momentum=0.9) if cfg.finetune else None
        self.lam_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 17)
        self.fit = GateFit(self.gated, self.cost, cfg.relax, torch.Generator().manual_seed(cfg.seed * 1000 + 19))
        self.epoch = 0
        self.metrics: list[dict] = []

    def phase1(self, max_steps: int, tolerance: float, window: int = 10) -> dict:
        """Algorithm 1's phase 1 as a fit: L_val of Gumbel samples at λ = 0 (only the λ = 0 part of the hypernet
        moves) until the mean accuracy of the last `window` sampled networks is within `tolerance` of the
        pretrained network's on the same batches, or `max_steps`. The start (`intact_logits`) is intact at the
        argmax, but its samples are not: a gate that the network cannot lose is made certain here, one it can
        lose stays uncertain, which is where λ > 0 can move it."""
        accs, ref = [], []

        def recent(values: list[float]) -> float:  # mean of the last `window` batches
            return sum(values[-window:]) / max(len(values[-window:]), 1)

        step = 0
        tau = self.cfg.relax.tau_start
        batches = iter(self.data.val)
        opt = torch.optim.Adam([self.hypernet.net.b2], lr=PHASE1_LR)
        while step < max_steps:
            x, y = next(batches, (None, None))
            if x is None:
                batches = iter(self.data.val)
                continue
            bl, sl = self.hypernet(torch.zeros(1, device=self.device))
            wb, ws = relax_gates(bl, sl, self.cfg.relax, tau, self.fit.generator)
            logits = self.gated(x, wb, ws)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(logits, y).backward()
            opt.step()
            with torch.no_grad():
                accs.append(float((logits.argmax(1) == y).float().mean()))
                ref.append(float((self.gated(x).argmax(1) == y).float().mean()))
            step += 1
            if step >= window and recent(accs) >= recent(ref) - tolerance:
                break
        reached = step > 0 and recent(accs) >= recent(ref) - tolerance
        return {"phase1_steps": step, "phase1_sampled_acc": recent(accs),
                "phase1_pretrained_acc_same_batches": recent(ref), "phase1_reached": bool(reached),
                "phase1_tolerance": tolerance}

    def network(self, gates: GateSet) -> nn.Module:
        """The pruned network of `gates` as evaluated and exported (BN re-estimated with `bn` adapt; the intact
        network keeps its own statistics until fine-tuning has moved the weights)."""
        moved = self.cfg.finetune and self.epoch > 0
        return pruned_network(self.model, gates, self.data.calibration, self.cfg.bn, moved)

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

"""The DARTS search loop: data → supernet + α → alternating steps → run directory.

Checkpoints hold every piece of state that influences later epochs (weights, α, both
optimisers, the LR schedule, the loaders' and the Gumbel generator's RNG states), so a
resumed run reaches the same result as an uninterrupted one.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from hwnas import distributed as dist
from hwnas.config import SearchConfig  # its home; imported from here too
from hwnas.data import DeviceLoader, default_augment, load_dataset, one_level_split, search_split
from hwnas.errors import HwnasError
from hwnas.evaluation import RunningStats, batch_statistics, evaluate
from hwnas.runs import RunDir
from hwnas.runtime import autocast_dtype, memory_format, resolve_device
from hwnas.latency.space import SpaceConfig
from hwnas.search.arch_grad import bn_stats_kept, first_order, second_order
from hwnas.search.control import LambdaSchedule, build_arch, build_cost, estimate_lambda_max
from hwnas.search.hyperdarts import (HYPER_GRADS, best_response_params, build_best_response, hyper_arch_grad,
                                     hyper_weight_loss)
from hwnas.search.lambda_max import one_hot, sample_valid
from hwnas.search.objective import EdgeNorm, RelaxedArch, SearchObjective
from hwnas.search.relax import temperature
from hwnas.spaces.genotype import Genotype, derive_genotype, edge_ops
from hwnas.spaces.supernet import Supernet, SupernetConfig




ARCH_MOVE = 6.0  # how far (in logits) α should be able to move over a whole search


def auto_arch_lr(total_steps: int) -> float:
    """Adam moves each logit by at most about its learning rate per step, so a search of N α steps
    can move a logit by about N·lr. DARTS's 3e-4 over its ~20k steps (50 epochs × 390) is a move
    of 6; the same move over a shorter search needs 6/N, clipped to [3e-4, 3e-2]. (With 3e-4 the
    ~140 steps of the digits quickstart moved no logit by more than 0.05: one network at every λ.)"""
    return min(max(ARCH_MOVE / max(total_steps, 1), 3e-4), 3e-2)


@dataclass
class SearchResult:
    genotype: Genotype
    metrics: list[dict]
    run: RunDir


class Search:
    """Everything a search holds, built from a config; `state_dict` is the whole of its state."""

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg
        self.device = dist.device_for(resolve_device(cfg.device))
        dist.check_batch(cfg.batch_size)
        splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        info = splits.info
        one_level = cfg.arch_grad == "one-level"  # one loss on the training data, less a held-out part
        (xw, yw), (xa, ya) = (one_level_split if one_level else search_split)(splits.x_train, splits.y_train, cfg.seed)
        aug = default_augment(info) if cfg.augment else None
        cl = memory_format(self.device, cfg.channels_last) == torch.channels_last
        kw = dict(device=self.device, channels_last=cl)
        # Under torchrun each process takes its slice of every (identical) global batch: hwnas.distributed.
        self.train_loader = DeviceLoader(xw, yw, info, cfg.batch_size, shuffle=True, augment=aug,
                                         drop_last=True, generator_seed=cfg.seed * 1000 + 1, shard=True, **kw)
        self.arch_loader = None if one_level else DeviceLoader(xa, ya, info, cfg.batch_size, shuffle=True,
                                                               augment=aug, drop_last=True, shard=True,
                                                               generator_seed=cfg.seed * 1000 + 2, **kw)
        if len(self.train_loader) == 0:
            raise HwnasError(f"--batch-size {cfg.batch_size} is larger than the search split "
                             f"({len(xw)} samples); use a smaller batch")
        self.eval_loader = DeviceLoader(xa, ya, info, 256, shuffle=False, **kw)
        self.info = info

        torch.manual_seed(cfg.seed)
        net_cfg = SupernetConfig(channels=cfg.channels, layers=cfg.layers, num_classes=info.num_classes,
                                 in_channels=info.channels, fused=cfg.fused, partial_channels=cfg.partial_channels)
        self.net = Supernet(net_cfg).to(self.device, memory_format=memory_format(self.device, cfg.channels_last))
        self.space = SpaceConfig(space="darts", input_h=info.height, input_w=info.width, in_channels=info.channels,
                                 channels=cfg.channels, layers=cfg.layers, batch=cfg.batch_size,
                                 num_classes=info.num_classes)
        self.cost = build_cost(cfg.control, self.space)
        if self.cost is not None:
            self.cost.to(self.device)
        n_targets = self.cost.n_targets if self.cost is not None else 1
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + 3)
        self.arch = build_arch(cfg.control, net_cfg.n_edges, net_cfg.n_ops, n_targets, gen)
        if cfg.partial_channels > 1:  # PC-DARTS's β: part of the architecture module (its optimiser, checkpoint)
            self.arch.edges = EdgeNorm(net_cfg.steps, generator=torch.Generator().manual_seed(cfg.seed * 1000 + 10))
        self.arch.to(self.device)
        self.gumbel_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 4)
        self.obj = SearchObjective(self.net, self.arch, cfg.relax, self.gumbel_gen,
                                   autocast_dtype(self.device, cfg.amp), cost=self.cost,
                                   exclude_none=cfg.control.none_excluded,
                                   edges=self.arch.edges if cfg.partial_channels > 1 else None)
        self.lam = LambdaSchedule(cfg.control, n_targets, self.device, cfg.seed * 1000 + 5,
                                  total_steps=cfg.epochs * self.steps_per_epoch())
        if cfg.control.lambda_max is not None:
            self.lam.set_lambda_max([cfg.control.lambda_max] * n_targets)
        self.lambda_record: dict | None = None  # lambda_max.json, once estimated
        self.on_lambda_max: Callable[[dict], None] | None = None  # told the record when Λ is estimated
        self.warmup_result: tuple[float, float] | None = None  # (loss, accuracy) of the warm-up, once done
        self.w_opt = torch.optim.SGD(self.net.parameters(), cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.a_lr = cfg.a_lr if cfg.a_lr is not None else auto_arch_lr(cfg.epochs * self.steps_per_epoch())
        self.a_opt = torch.optim.Adam(self.arch.parameters(), self.a_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.a_weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, max(cfg.epochs, 1), eta_min=cfg.w_lr_min)
        self.hyper = self.hyper_opt = self.hyper_gen = None  # HyperDARTS: φ, its optimiser, the α̃ noise
        if cfg.arch_grad in HYPER_GRADS:
            self.hyper = build_best_response(cfg.arch_grad, self.net, torch.Generator().manual_seed(cfg.seed * 1000 + 8))
            self.hyper_opt = torch.optim.Adam(self.hyper.parameters(), cfg.hyper_lr)
            self.hyper_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 9)
        self.epoch = 0
        self.metrics: list[dict] = []
        self.history: list[dict[str, torch.Tensor]] = []  # expected op weights after each epoch

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch, "net": self.net.state_dict(), "arch": self.arch.state_dict(),
            "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(), "sched": self.sched.state_dict(),
            "train_loader": self.train_loader.state_dict(),
            "arch_loader": None if self.arch_loader is None else self.arch_loader.state_dict(),
            "gumbel_gen": self.gumbel_gen.get_state(), "metrics": self.metrics, "history": self.history,
            "lam": self.lam.state_dict(), "lambda_record": self.lambda_record, "warmup_result": self.warmup_result,
            "hyper": None if self.hyper is None else {"phi": self.hyper.state_dict(), "opt": self.hyper_opt.state_dict(),
                                                      "gen": self.hyper_gen.get_state()},
        }

    def load_state_dict(self, s: dict) -> None:
        self.epoch = s["epoch"]
        self.net.load_state_dict(s["net"])
        self.arch.load_state_dict(s["arch"])
        self.w_opt.load_state_dict(s["w_opt"])
        self.a_opt.load_state_dict(s["a_opt"])
        self.sched.load_state_dict(s["sched"])
        self.train_loader.load_state_dict(s["train_loader"])
        if self.arch_loader is not None:
            self.arch_loader.load_state_dict(s["arch_loader"])
        self.gumbel_gen.set_state(s["gumbel_gen"])
        self.metrics, self.history = list(s["metrics"]), list(s["history"])
        self.lam.load_state_dict(s["lam"])
        self.lambda_record = s["lambda_record"]
        # a run saved before this field existed estimated Λ right after its warm-up
        self.warmup_result = s.get("warmup_result", (float("nan"), float("nan")))
        if self.hyper is not None:
            self.hyper.load_state_dict(s["hyper"]["phi"])
            self.hyper_opt.load_state_dict(s["hyper"]["opt"])
            self.hyper_gen.set_state(s["hyper"]["gen"])

    def genotype(self, lam: torch.Tensor | None = None) -> Genotype:
        """The derived genotype; with a λ-hypernet, at `lam` (default λ = 0)."""
        self._set_eval_lambda(lam)
        ra = self.obj.expected()
        return derive_genotype(*ra.derivation_weights(), self.net.cfg.steps, self.net.cfg.multiplier)

    @torch.no_grad()
    def subnetwork_accuracy(self, genotype: Genotype, loader=None) -> tuple[float, float]:
        """(loss, accuracy) of `genotype` as a sub-network of the supernet on the validation split (or
        `loader`), with batch-statistics BN: the running statistics belong to what the supernet was
        trained as, not to one sub-network. (The λ of a hypernet should be set beforehand: it
        decides HyperDARTS's w_φ(α).)"""
        ops_n, ops_r = edge_ops(genotype)
        n_ops = self.net.cfg.n_ops
        ra = RelaxedArch(one_hot(ops_n, n_ops, self.device), one_hot(ops_r, n_ops, self.device), ops_n, ops_r)
        params = self.eval_params()
        with batch_statistics(self.net):
            return evaluate(lambda x: self.obj.logits(x, ra, params), self.eval_loader if loader is None else loader)

    def _set_eval_lambda(self, lam: torch.Tensor | None) -> None:
        if self.cfg.control.needs_lambda_max:
            self.lam.apply(self.obj, torch.zeros(self.lam.n_targets) if lam is None else lam)

    def warmup(self, epochs: int, on_step: Callable[[int, int], None] | None = None,
               on_epoch_end: Callable[[dict], None] | None = None) -> tuple[float, float]:
        """Train the supernet's weights through sampled valid sub-networks (single-path, one op per
        edge) for `epochs`; α is untouched. Returns the (loss, accuracy) seen in training;
        `on_epoch_end` gets a row per warm-up epoch (`phase` "warm-up")."""
        self.net.train()
        stats = RunningStats()
        n_steps = self.steps_per_epoch()
        n_edges, n_ops = self.net.cfg.n_edges, self.net.cfg.n_ops
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + 7)
        for epoch in range(epochs):
            t0, epoch_stats = time.perf_counter(), RunningStats()
            for i, (xt, yt) in enumerate(self.train_loader):
                if i >= n_steps:
                    break
                (ops_n, ops_r), = sample_valid(1, n_edges, gen, self.net.cfg.steps, self.net.cfg.multiplier,
                                               allowed=self.cfg.control.allowed_ops)[0]
                ra = RelaxedArch(one_hot(ops_n, n_ops, self.device), one_hot(ops_r, n_ops, self.device), ops_n, ops_r)
                self.w_opt.zero_grad(set_to_none=True)
                with dist.synced_batch_norm():  # under torchrun: the global batch's BN statistics
                    loss, logits = self.obj.loss(xt, yt, ra)
                    loss.backward()
                dist.average_gradients(self.net.parameters())
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
                self.w_opt.step()
                stats.update(loss, logits, yt)
                epoch_stats.update(loss, logits, yt)
                if on_step is not None:
                    on_step(i + 1, n_steps)
            dist.reduce_stats(epoch_stats)
            if on_epoch_end is not None:
                loss, acc = epoch_stats.result()
                on_epoch_end({"phase": "warm-up", "epoch": epoch + 1, "epochs": epochs, "train_loss": loss,
                              "train_acc": acc, "epoch_seconds": time.perf_counter() - t0})
        dist.average_buffers(self.net)  # every process's BN statistics the same before Λ is estimated
        return dist.reduce_stats(stats).result()

    def warmup_and_estimate_lambda_max(self, on_step: Callable[[int, int], None] | None = None,
                                       on_epoch_end: Callable[[dict], None] | None = None) -> dict | None:
        """Warm the supernet up (`warmup`: S of Theorem 1 is a statement about sub-networks, and a
        supernet trained only as a mixture has sub-networks far worse than chance), then estimate Λ — at once
        if the search has no λ = 0 phase, else when that phase ends (`estimate_lambda_max`, called by
        `run_epoch`; None here then)."""
        ctl = self.cfg.control
        self.warmup_result = self.warmup(ctl.warmup_epochs, on_step, on_epoch_end)
        return self.estimate_lambda_max() if self.lam.zero_phase_done() else None

    def lambda_max_pending(self) -> bool:
        """A λ-hypernet search whose Λ is not known yet (its λ = 0 phase is still running)."""
        return self.cfg.control.needs_lambda_max and self.lam.lambda_max is None

    def estimate_lambda_max(self) -> dict:
        """Λ on the supernet as trained so far (the record of lambda_max.json; `on_lambda_max` is told).

        Estimated after the single-path warm-up alone, the losses it compares were noise on digits: the
        supernet was still at chance (L̄ = 2.30 = the label entropy), the all-skip network scored better than
        most samples in one seed of three and Λ came out 8× smaller than in the other two (11.6 against 95–100),
        so λ = Λ stopped short of the cheap end (0.55× against 0.41–0.42×, README #10). At the end of the
        λ = 0 phase the weights have been trained as a plain DARTS search for a quarter of the run."""
        ctl = self.cfg.control
        train_loss, train_acc = self.warmup_result or (float("nan"), float("nan"))
        was_training = self.net.training
        dist.average_buffers(self.net)  # mid-epoch under torchrun: one BN state, so one Λ, on every process
        self._set_eval_lambda(None)
        record = estimate_lambda_max(self.obj, self.cost, lambda: iter(self.eval_loader), self.info.num_classes,
                                     ctl, self.cfg.seed * 1000 + 6,
                                     self.net.cfg.steps, self.net.cfg.multiplier,
                                     recal_batches=list(itertools.islice(iter(self.recal_loader()), 10)))
        record["warmup_train_loss"], record["warmup_train_acc"] = train_loss, train_acc
        record["estimated_after_steps"] = self.lam.step   # search steps at λ = 0 before it (0: right after warm-up)
        if self.lam.step:
            record["estimated_by"] += f", then {self.lam.step} search steps at λ = 0 (the λ = 0 phase)"
        self.lam.set_lambda_max(record["lambda_max"])
        self.lambda_record = record
        self.net.train(was_training)
        if self.on_lambda_max is not None:
            self.on_lambda_max(record)
        return record

    def recal_loader(self, seed: int = 12) -> DeviceLoader:
        """Training batches in a fixed order of their own (the search's loaders are not advanced): for BN
        recalibration and fine-tunes of sub-networks."""
        src = self.train_loader
        return DeviceLoader(src.x, src.y, self.info, self.cfg.batch_size, device=src.device, shuffle=True,
                            drop_last=True, generator_seed=self.cfg.seed * 1000 + seed, channels_last=src.channels_last)

    def steps_per_epoch(self) -> int:
        n = len(self.train_loader) if self.arch_loader is None else min(len(self.train_loader), len(self.arch_loader))
        return n if self.cfg.max_steps_per_epoch is None else min(n, self.cfg.max_steps_per_epoch)

    def step(self, xt: torch.Tensor, yt: torch.Tensor, xv: torch.Tensor | None, yv: torch.Tensor | None,
             train_stats: RunningStats, update_arch: bool = True) -> None:
        """One search step: α, then w (bilevel); or both on one loss (one-level). λ is chosen first
        (without `update_arch`, as in the warm-up, the caller's λ stays). Under torchrun the batches are this
        process's slices, BN uses the global batch's statistics and gradients are averaged (hwnas.distributed)."""
        with dist.synced_batch_norm():
            self._step(xt, yt, xv, yv, train_stats, update_arch)

    def _step(self, xt, yt, xv, yv, train_stats: RunningStats, update_arch: bool) -> None:
        cfg = self.cfg
        if update_arch:
            self.lam.apply(self.obj)
        self.a_opt.zero_grad(set_to_none=True)
        self.w_opt.zero_grad(set_to_none=True)
        one_level = cfg.arch_grad == "one-level" and update_arch
        arch_params = list(self.arch.parameters())
        with bn_stats_kept(self.net):  # α passes must not move the BN statistics eval mode reads
            if update_arch and cfg.arch_grad == "first":
                first_order(self.obj, xv, yv)
            elif update_arch and cfg.arch_grad == "second":
                second_order(self.obj, xt, yt, xv, yv, xi=self.sched.get_last_lr()[0],
                             reduce=dist.average_ if dist.is_distributed() else None)
            elif update_arch and self.hyper is not None:
                hyper_arch_grad(self.obj, self.hyper, xv, yv)
            if update_arch and not one_level:
                dist.average_gradients(arch_params)  # under torchrun: the global batch's ∇α
                self.a_opt.step()
        if self.hyper is not None:  # w and φ on L_train(w_φ(α̃), α̃), α̃ around the current α
            self.hyper_opt.zero_grad(set_to_none=True)
            loss, logits = hyper_weight_loss(self.obj, self.hyper, xt, yt, cfg.hyper_sigma, self.hyper_gen)
            loss.backward()
            dist.average_gradients(self.hyper.parameters())
            torch.nn.utils.clip_grad_norm_(self.hyper.parameters(), cfg.grad_clip)
            self.hyper_opt.step()
        else:
            ra = self.obj.sample()
            if not one_level:  # the weight step needs no α gradient, so do not compute one
                ra = ra.detach()
            loss, logits = self.obj.loss(xt, yt, ra)
            (loss + self.obj.penalty(ra) if one_level else loss).backward()
        dist.average_gradients(self.net.parameters())
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.w_opt.step()
        if one_level:
            dist.average_gradients(arch_params)
            self.a_opt.step()
        train_stats.update(loss, logits, yt)

    def run_epoch(self, on_step: Callable[[int, int], None] | None) -> dict:
        cfg = self.cfg
        self.obj.tau = temperature(cfg.relax, self.epoch / max(cfg.epochs - 1, 1))
        lr = self.sched.get_last_lr()[0]
        self.net.train()
        stats = RunningStats()
        n_steps = self.steps_per_epoch()
        arch_batches = iter(self.arch_loader) if self.arch_loader is not None else None
        t0 = time.perf_counter()
        for i, (xt, yt) in enumerate(self.train_loader):
            if i >= n_steps:
                break
            xv, yv = next(arch_batches) if arch_batches is not None else (None, None)
            if self.lambda_max_pending() and self.lam.zero_phase_done():
                self.estimate_lambda_max()   # the λ = 0 phase is over: Λ on the weights it trained
            self.step(xt, yt, xv, yv, stats)
            if on_step is not None:
                on_step(i + 1, n_steps)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        self.sched.step()
        train_loss, train_acc = dist.reduce_stats(stats).result()
        dist.average_buffers(self.net)  # one BN state on every process: evaluation and checkpoint agree
        self.net.eval()
        self._set_eval_lambda(None)  # a λ-hypernet is evaluated at λ = 0; a fixed-λ search at its λ
        ra = self.obj.expected()
        if cfg.relax.hard:  # a single-path supernet is judged by the network it derives, not by a mixture
            val_loss, val_acc = self.subnetwork_accuracy(self.genotype())
        else:
            params = self.eval_params()
            val_loss, val_acc = self.relaxed_accuracy(ra, params)
        self.epoch += 1
        self.history.append({"normal": ra.w_normal.detach().cpu(), "reduce": ra.w_reduce.detach().cpu()})
        row = {"epoch": self.epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
               "val_acc": val_acc, "lr": lr, "tau": self.obj.tau if cfg.relax.kind == "gumbel" else float("nan"),
               "steps": n_steps, "epoch_seconds": seconds, "genotype": str(self.genotype())}
        row.update(self._cost_columns())
        return row

    @torch.no_grad()
    def relaxed_accuracy(self, ra: RelaxedArch, params: dict | None = None) -> tuple[float, float]:
        """(loss, accuracy) of the relaxed architecture `ra` on the validation split. A λ-hypernet's
        weights were trained under α(λ) for λ all over [0, Λ], so its running BN statistics are an
        average over very different mixtures (conv-heavy at λ = 0, pooling-heavy at Λ): such a run is
        evaluated with batch statistics (measured: eval-mode BN put α(0) at 10–57 % on digits while
        batch statistics put it near the mid-λ mixtures' 98 %). Other searches use eval mode."""
        fn = lambda x: self.obj.logits(x, ra, params)  # noqa: E731
        if not self.cfg.control.needs_lambda_max:
            self.net.eval()
            return evaluate(fn, self.eval_loader)
        with batch_statistics(self.net):
            return evaluate(fn, self.eval_loader)

    @torch.no_grad()
    def eval_params(self) -> dict[str, torch.Tensor] | None:
        """The weights the supernet is evaluated with: w_φ(α) at the current α for HyperDARTS, else its own."""
        return None if self.hyper is None else best_response_params(self.hyper, self.net, *self.arch(self.obj.lam_input))

    @torch.no_grad()
    def _cost_columns(self) -> dict:
        """Expected cost per target of the expected architecture: at λ = 0 and at λ = Λ for a hypernet."""
        if self.cost is None:
            return {}
        points = {"": None}
        if self.cfg.control.needs_lambda_max:
            points = {"@0": torch.zeros(self.lam.n_targets), "@max": self.lam.lambda_max}
        out = {}
        for suffix, lam in points.items():
            if suffix == "@max" and lam is None:  # Λ not estimated yet (the λ = 0 phase is still running)
                out.update({f"cost@max[{n}, {u}]": float("nan") for n, u in zip(self.cost.names, self.cost.units)})
                continue
            self._set_eval_lambda(lam)
            ra = self.obj.expected()
            for name, unit, v in zip(self.cost.names, self.cost.units, self.cost.expected(ra.w_normal, ra.w_reduce)):
                out[f"cost{suffix}[{name}, {unit}]"] = float(v)
        self._set_eval_lambda(None)
        return out


def run_search(cfg: SearchConfig, out: str | Path, resume: bool = False,
               on_step: Callable[[int, int], None] | None = None,
               on_epoch_end: Callable[[dict], None] | None = None) -> SearchResult:
    """Search, writing the run directory `out`; `resume` continues the run saved there with its own config.
    A new run's directory is made once the data, tables and network are built: bad input leaves nothing.

    Started by torchrun with several processes, it runs data-parallel (`hwnas.distributed`): every process
    searches on its slice of each batch, gradients are averaged, and only rank 0 writes `out`."""
    if resume:
        run = RunDir.create(out, {}, resume=True)
        cfg = SearchConfig.from_dict(run.read_json("config.json"))
    else:
        RunDir.check_new(out)
    with dist.session(dist.device_for(resolve_device(cfg.device))):
        return _run_search(cfg, out, run if resume else None, on_step, on_epoch_end)


def _run_search(cfg: SearchConfig, out: str | Path, run: RunDir | None, on_step, on_epoch_end) -> SearchResult:
    resume = run is not None
    search = Search(cfg)
    dist.barrier()  # every process has checked a new `out` before rank 0 creates the run there
    if not resume:
        run = RunDir.create(out, cfg.to_dict())
    if resume and (state := run.load_checkpoint(search.device, keys=("epoch", "net", "arch"))) is not None:
        try:
            search.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, TypeError):
            raise HwnasError(f"{run.file('checkpoint.pt')} does not fit the run in {out} (another network or "
                             f"search); remove it to restart the run, or choose another --out") from None
    search.on_lambda_max = lambda record: run.write_json("lambda_max.json", record)
    if search.lambda_max_pending() and search.warmup_result is None:
        search.warmup_and_estimate_lambda_max(on_step, on_epoch_end)
        run.save_checkpoint(search.state_dict())
    elif cfg.control.needs_lambda_max and search.lam.lambda_max is not None and search.lambda_record is None:
        run.write_json("lambda_max.json", {"lambda_max": search.lam.lambda_max.tolist(), "estimated_by": "given"})
    while search.epoch < cfg.epochs:
        row = search.run_epoch(on_step)
        search.metrics.append(row)
        run.save_checkpoint(search.state_dict())  # checkpoint first: metrics.csv can always be rebuilt from it
        run.write_metrics(search.metrics)
        run.write_json("genotype.json", search.genotype().record())
        if on_epoch_end is not None:
            on_epoch_end(row)
    if search.lambda_max_pending():  # a run too short to leave its λ = 0 phase
        search.estimate_lambda_max()
        run.save_checkpoint(search.state_dict())
    genotype = search.genotype()
    run.write_json("genotype.json", genotype.record())
    if search.history and dist.is_main():
        from hwnas.plots import plot_alpha_history  # matplotlib only when a plot is made

        plot_alpha_history(search.history, run.file("plots/alphas.png"), title=f"{cfg.relax.kind}, {cfg.arch_grad}")
    return SearchResult(genotype, search.metrics, run)


def quick_config(**overrides) -> SearchConfig:
    """The embedded default (digits, small supernet) with overrides; what `hwnas quickstart` runs."""
    return replace(SearchConfig(), **overrides)

"""Data-parallel runs under `torchrun` (torch.distributed; gloo on CPU, NCCL on CUDA).

`torchrun --nproc-per-node N --no-python hwnas search|train …` starts N copies of the command with
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; this module reads them. Without them
(or with WORLD_SIZE 1) every function here is a no-op and a run is the ordinary single process.

How a data-parallel step is made to equal the single-process step on the same global batch:

- Every rank builds the same everything from the same seeds (weights, α or λ-hypernet, optimisers,
  the loaders' generators, Gumbel noise, λ samples), draws the same globally shuffled and augmented
  batch and keeps its contiguous slice of it (`DeviceLoader(shard=…)`, `shard_slice`).
- Before every optimiser step the gradients are averaged explicitly (`average_gradients`: one
  flattened all-reduce of every `.grad`), not by wrapping the modules in `DistributedDataParallel`.
  Why: a search step has up to three optimisers (w, α or the λ-hypernet, HyperDARTS's φ) fed by
  different losses on different batches, gradients written by `torch.autograd.grad` (α passes,
  second order) rather than by `backward()` on a DDP-wrapped module, and a second-order path that
  needs the *global* ∇w L_train and ∇w′ L_val in the middle of one α gradient. DDP's reducer hooks
  only `backward()` through the wrapped forward, once per forward; explicit averaging right before
  each `optimizer.step()` (and inside the second-order unroll, `average_`) is exact for every path:
  the losses are batch means, so the mean of the shards' gradients is the global batch's gradient
  (the cost term λ·Tᵀγ does not depend on the data and is the same on every rank, so averaging
  keeps it). Gradient clipping comes after the averaging, so it sees the global gradient's norm.
- Batch normalisation in training passes uses the global batch's statistics (`synced_batch_norm`: one
  differentiable all-reduce per BN call). Measured first without it (each rank normalising its own
  slice, what DDP does without SyncBatchNorm): on digits, batch 32 over 2 processes, the derived
  genotype already differed from one process's after 4 steps, since Adam's first α steps follow the
  sign of small gradients. torch's SyncBatchNorm is not usable here: it runs on GPUs only (CI runs
  gloo on CPUs) and the fused supernet calls `F.batch_norm` over concatenated channel blocks, not BN
  modules. The cost is one collective per BN call in the forward pass and one in the backward.
  Running statistics that the fused supernet's shared pooling BN updates from its slice directly are
  averaged over ranks before every evaluation and checkpoint (`average_buffers`): running means are
  then the global ones (the update is linear in the batch mean), variances miss the spread between
  slices' means, and every rank holds the same state. With that, a data-parallel run equals the
  one-process run up to floating-point summation order (`tests/test_distributed.py` states the
  tolerance).
- Evaluation is not sharded: every rank evaluates the whole validation or test split (the same
  numbers on every rank, no communication), so metrics.csv has the same rows and columns as a
  single process's. Training metrics are summed over ranks (`reduce_stats`).
- Only rank 0 writes files (`hwnas.runs.atomic_write` and the plots ask `is_main`) and reports
  progress; the other ranks read the same run directory for `--resume` (one node, or a shared disk).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hwnas.errors import HwnasError

if TYPE_CHECKING:
    import torch

    from hwnas.evaluation import RunningStats


def world_size() -> int:
    """Processes in the run (torchrun's WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's rank (torchrun's RANK; 0 without torchrun)."""
    return int(os.environ.get("RANK", "0") or 0) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's rank on its node (torchrun's LOCAL_RANK): which GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if world_size() > 1 else 0


def is_distributed() -> bool:
    """Started by torchrun with more than one process."""
    return world_size() > 1


def is_main() -> bool:
    """The process that writes files and reports progress (rank 0; the only one without torchrun)."""
    return rank() == 0


def refuse(command: str) -> None:
    """One line for a command that does not run data-parallel, instead of N copies writing one run."""
    if is_distributed():
        raise HwnasError(f"hwnas {command} does not run under torchrun yet (WORLD_SIZE={world_size()}): "
                         f"run it as one process, without torchrun")


def check_batch(batch_size: int, option: str = "--batch-size") -> None:
    """The global batch must split into equal slices (the search averages slices' gradients with equal weights)."""
    n = world_size()
    if n > 1 and batch_size % n:
        raise HwnasError(f"{option} {batch_size} does not split evenly over {n} processes; use a multiple of {n}")


def device_for(device: torch.device) -> torch.device:
    """Under torchrun a bare `cuda` means this process's GPU, cuda:LOCAL_RANK."""
    import torch

    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


@contextmanager
def session(device: torch.device) -> Iterator[None]:
    """The process group for one run: joined on entry (NCCL for CUDA, gloo otherwise) if torchrun started
    several processes and none is joined yet, left on exit if joined here. A no-op without torchrun."""
    if not is_distributed():
        yield
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _active() -> bool:
    if not is_distributed():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (e.g. all have checked --out before rank 0 creates the run there)."""
    if _active():
        import torch.distributed as dist

        dist.barrier()


def shard_slice(n: int) -> slice:
    """This rank's contiguous part of a global batch of `n` samples (sizes differ by at most one)."""
    k, r, i = world_size(), rank(), n % world_size()
    base = n // k
    start = r * base + min(r, i)
    return slice(start, start + base + (1 if r < i else 0))


def average_(tensors: Iterable[torch.Tensor | None], weight: float | None = None) -> None:
    """Average `tensors` (each the same shape on every rank) over ranks, in place, in one all-reduce: each rank's
    contribution is multiplied by `weight` (default 1/world size; a slice's share of the global batch for slices
    of unequal size) and the contributions are summed. None entries are skipped; which entries are None must be
    the same on every rank (it is: every rank runs the same architecture on the same parameters)."""
    if not _active():
        return
    import torch
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    ts = [t for t in tensors if t is not None]
    if not ts:
        return
    w = 1.0 / world_size() if weight is None else weight
    by_type: dict[tuple, list[torch.Tensor]] = {}
    for t in ts:
        by_type.setdefault((t.dtype, t.device), []).append(t)
    for group in by_type.values():
        flat = _flatten_dense_tensors([t.detach() for t in group]).mul_(w)
        dist.all_reduce(flat)
        for t, v in zip(group, _unflatten_dense_tensors(flat, group)):
            t.detach().copy_(v)


def average_gradients(params: Iterable[torch.Tensor], weight: float | None = None) -> None:
    """Average the `.grad` of `params` over ranks (before the optimiser step and any clipping)."""
    average_([p.grad for p in params], weight)


def average_buffers(module: torch.nn.Module) -> None:
    """Average the floating-point buffers (BN running statistics) of `module` over ranks: every rank then holds
    the same state, and the running means are the global batch's (the update is linear in the batch mean)."""
    if _active():
        average_(b for b in module.buffers() if b.is_floating_point())


@contextmanager
def synced_batch_norm() -> Iterator[None]:
    """Within the block, batch-statistics BN normalises with the statistics of the *global* batch (every process's
    slice): `torch.nn.functional.batch_norm` is swapped for `_global_batch_norm`, which all-reduces each channel's
    count, sum and sum of squared deviations (one differentiable all-reduce per BN call) and normalises with them.
    Both the BN modules and the fused supernet's `F.batch_norm` calls look the function up when called, so the
    model code stays as it is. Only for training passes on sharded batches: every process must make the same BN
    calls in the same order (they do: same network, same architecture sample). A no-op without torchrun."""
    if not _active():
        yield
        return
    import warnings

    import torch.nn.functional as F

    # torch 2.x marks the differentiable all-reduce deprecated in favour of a private module; it still works
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated")
    local = F.batch_norm
    F.batch_norm = functools.partial(_global_batch_norm, local)
    try:
        yield
    finally:
        F.batch_norm = local


def _global_batch_norm(local, input, running_mean, running_var, weight=None, bias=None, training=False,
                       momentum=0.1, eps=1e-5):
    """`F.batch_norm` with the global batch's statistics when `training` (else `local`, the original function).
    Each process contributes (n_r, n_r·μ_r, M2_r + n_r·μ_r²) per channel, in float64; the global mean is
    Σ n_r μ_r / N and the biased variance (Σ(M2_r + n_r μ_r²) − N μ²) / N. Gradients flow through the all-reduce
    (its backward is an all-reduce of the gradients), as in SyncBatchNorm; running statistics get the update
    F.batch_norm would make on the global batch (unbiased variance)."""
    if not training:
        return local(input, running_mean, running_var, weight, bias, training, momentum, eps)
    import torch
    from torch.distributed.nn.functional import all_reduce

    dims = [0, *range(2, input.dim())]
    n = input.numel() // input.shape[1]
    var, mean = torch.var_mean(input.float(), dim=dims, correction=0)  # (C,), this slice's
    mean64 = mean.double()
    parts = torch.stack([torch.full_like(mean64, n), n * mean64, n * (var.double() + mean64 * mean64)])  # (3, C)
    total, s1, s2 = all_reduce(parts).unbind(0)
    g_mean = s1 / total
    g_var = (s2 / total - g_mean * g_mean).clamp_min(0)
    shape = [1, -1] + [1] * (input.dim() - 2)
    y = (input - g_mean.to(input.dtype).view(shape)) * torch.rsqrt(g_var + eps).to(input.dtype).view(shape)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    if running_mean is not None and momentum:
        with torch.no_grad():  # no host synchronisation: the count stays a tensor
            running_mean.mul_(1 - momentum).add_(g_mean.to(running_mean.dtype), alpha=momentum)
            unbiased = g_var * total / (total - 1).clamp_min(1)
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    return y


def reduce_stats(stats: RunningStats) -> RunningStats:
    """Training loss/accuracy sums of every rank's slices added up (in place): the global batch's figures."""
    if not _active():
        return stats
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(stats.loss_sum), float(stats.correct), float(stats.count)], dtype=torch.float64,
                     device=device)
    dist.all_reduce(t)
    stats.loss_sum, stats.correct, stats.count = float(t[0]), int(round(float(t[1]))), int(round(float(t[2])))
    return stats

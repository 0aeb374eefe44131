"""Loss/accuracy accumulation without host synchronisation, and one evaluation helper for every entry point."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
import torch.nn.functional as F


class RunningStats:
    """Sums of loss and correct predictions kept on the device; read once per epoch."""

    def __init__(self) -> None:
        self.loss_sum: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | int = 0
        self.count = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = y.shape[0]
        self.loss_sum = self.loss_sum + loss.detach() * n
        self.correct = self.correct + (logits.detach().argmax(dim=1) == y).sum()
        self.count += n

    def result(self) -> tuple[float, float]:
        """(mean loss, accuracy in [0, 1]); NaN for no samples."""
        if self.count == 0:
            return float("nan"), float("nan")
        return float(self.loss_sum) / self.count, float(self.correct) / self.count


MERGE_SAMPLES = 256


def merged(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], max_samples: int = MERGE_SAMPLES
           ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive batches concatenated into chunks of at most `max_samples` (a batch larger than that
    stays whole), for forwards whose result does not depend on the batch: eval-mode BN, sums of losses.
    A sub-network of the small search supernets is mostly per-call overhead at batch 64 (digits, single
    path: 20 ms for 64 samples, 105 ms for 640), and the Λ estimate, BN recalibration and `pareto` run
    hundreds of such forwards."""
    xs, ys, n = [], [], 0

    def chunk():
        return (torch.cat(xs), None if ys[0] is None else torch.cat(ys)) if len(xs) > 1 else (xs[0], ys[0])

    for x, y in batches:
        if xs and n + x.shape[0] > max_samples:
            yield chunk()
            xs, ys, n = [], [], 0
        xs.append(x)
        ys.append(y)
        n += x.shape[0]
    if xs:
        yield chunk()


@torch.no_grad()
def evaluate(logits_fn: Callable[[torch.Tensor], torch.Tensor],
             batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `logits_fn` over `batches`. The caller sets train/eval mode."""
    stats = RunningStats()
    for x, y in batches:
        logits = logits_fn(x).float()
        stats.update(F.cross_entropy(logits, y), logits, y)
    return stats.result()


@contextmanager
def batch_statistics(net: torch.nn.Module):
    """Evaluate sub-networks of a supernet with batch-statistics BN (training mode) and leave no trace:
    the running statistics belong to the supernet as trained, not to any one sub-network."""
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    was_training = net.training
    net.train()
    try:
        with torch.no_grad():
            yield net
    finally:
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(buffers[k])
        net.train(was_training)

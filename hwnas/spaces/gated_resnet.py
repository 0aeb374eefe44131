"""ResNet18 with gates (performance-control pruning): the gated network, its valid gate sets,
and the physically smaller network a gate set stands for.

Gates γ, on torchvision's resnet18 (`hwnas.latency.resnet_keys.torchvision_resnet18`):

- per BasicBlock (layer1.0 … layer4.1), a categorical choice of the residual branch's inner
  width f ∈ BRANCH_CHOICES = (0, .25, .5, .75, 1): the branch keeps its first round(f·width)
  inner channels (conv1's outputs = conv2's inputs); f = 0 removes the branch;
- per projection block (layer2.0, layer3.0, layer4.0), a binary gate on the 1×1 projection
  shortcut (kept / removed).

Kept widths come in fixed groups: a block of width W ∈ {64, 128, 256, 512} keeps W/4, W/2, 3W/4 or W
inner channels, so every kept count is already a multiple of 16 (layer1's quarter, 16, is the smallest).
`channel_multiple` N (a divisor of 64: `CHANNEL_MULTIPLES`) restricts the choices to kept counts that are
multiples of N (`allowed_choices`; the removed branch and full width always stay): N ≤ 16 changes nothing,
N = 32 drops layer1's 16 and 48, N = 64 keeps layer1 at 0 or 64 and layer2 at 0, 64 or 128. That is exactly
the set of networks one gets by rounding each kept count to the nearest multiple of N (`round_gates`).

Channels are kept in importance order: `reorder_by_importance` permutes each block's inner
channels once (conv1 out, bn1, conv2 in: the function is unchanged) so that "the first k" are
the k with the largest ‖conv1 filter‖₁ · |bn1 γ|.

Γ_valid (Theorem 1). A gate set is *broken* when the network's output no longer depends on
its input. Blocks with an identity shortcut always pass their input on, so the only way to
break the network is a projection block with its branch removed (f = 0) *and* its projection
shortcut removed: the block's output is then relu(0) = 0 for every input, and so is
everything after it up to the head's constant bias. Γ_valid is every other gate set.

The relaxed forward (BN in eval mode, so each BN is affine: BN(z) = s·z + t) mixes the
choices of one block in a single pass. With h = relu(bn1(conv1(x))) and m_f the 0/1 mask of
the channels choice f keeps,

    Σ_f γ_f · BN2(conv2(m_f ⊙ h)) = s · conv2((Σ_f γ_f m_f) ⊙ h) + (Σ_{f>0} γ_f) · t
                                  = BN2(conv2(m ⊙ h)) − (1 − Σ_{f>0} γ_f) · t,     m = Σ_f γ_f m_f,

(the f = 0 term is the removed branch, 0), and the block is relu(branch + γ_on · shortcut(x)).
The last form is bit-for-bit torchvision's block when every gate is on (m = 1, the correction
is 0·t), and t is taken as BN2(0) so that a removed branch gives exactly 0.

With `batch_stats=True` every BN normalises with the statistics of the batch instead (nothing is
written to the running statistics): each sampled gate set is judged as it is after its BN statistics
are re-estimated (`hwnas.prune.adapt`), not with the intact network's, which pruning makes wrong
(measured, MNIST ResNet18, frozen weights: a gate set at 0.61x predicted latency at 60 % with the
intact network's statistics, 94.5 % with re-estimated ones). BN is then not affine, so a block is
    (1 − γ_0) · BN2(conv2(m' ⊙ h)),   m' = Σ_{f>0} γ_f m_f + γ_0 m_1,
exactly the chosen block for one-hot γ (a removed branch is 0 · the full branch), with no BN of an
all-zero input (whose batch variance 0 would divide its gradient by √eps).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.config import CHANNEL_MULTIPLES, check_channel_multiple  # noqa: F401  (torch-free: options checked early)
from hwnas.errors import HwnasError
from hwnas.latency.resnet_keys import BLOCKS, FRACTIONS, BlockPosition, PrunedBlock, downsample_name, inner_width

BRANCH_CHOICES = (0.0, *FRACTIONS)                  # index 0: branch removed
PROJECTIONS = ("layer2.0", "layer3.0", "layer4.0")  # blocks with a 1×1/2 projection shortcut
BLOCK_WIDTHS = tuple(64 * 2 ** (int(b[len("layer")]) - 1) for b in BLOCKS)   # torchvision's 64/128/256/512


def round_channels(channels: int, multiple: int) -> int:
    """`channels` to the nearest multiple of `multiple` (halves up), at least `multiple`; 0 stays 0."""
    return 0 if channels == 0 else max(multiple, (channels + multiple // 2) // multiple * multiple)


def allowed_choices(multiple: int = 1) -> torch.Tensor:
    """(blocks, 5) bool: whether choice j of block b keeps a multiple of `multiple` inner channels (removed: yes)."""
    check_channel_multiple(multiple)
    return torch.tensor([[f == 0 or inner_width(f, w) % multiple == 0 for f in BRANCH_CHOICES]
                         for w in BLOCK_WIDTHS])


@dataclass(frozen=True)
class GateSet:
    """One discrete gate set: a width fraction per block (BLOCKS order), a kept flag per projection shortcut."""

    fractions: tuple[float, ...] = (1.0,) * len(BLOCKS)
    shortcuts: tuple[bool, ...] = (True,) * len(PROJECTIONS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        object.__setattr__(self, "shortcuts", tuple(bool(s) for s in self.shortcuts))
        if len(self.fractions) != len(BLOCKS) or len(self.shortcuts) != len(PROJECTIONS):
            raise HwnasError(f"a gate set has {len(BLOCKS)} fractions and {len(PROJECTIONS)} shortcut gates")
        bad = [f for f in self.fractions if f not in BRANCH_CHOICES]
        if bad:
            raise HwnasError(f"width fraction(s) {bad} not among {BRANCH_CHOICES}")

    @classmethod
    def from_indices(cls, branch: list[int], shortcut: list[int]) -> GateSet:
        return cls(tuple(BRANCH_CHOICES[i] for i in branch), tuple(bool(i) for i in shortcut))

    @classmethod
    def sample(cls, generator: torch.Generator) -> GateSet:
        """Every gate uniform over its choices (the set may be broken)."""
        b = torch.randint(len(BRANCH_CHOICES), (len(BLOCKS),), generator=generator).tolist()
        s = torch.randint(2, (len(PROJECTIONS),), generator=generator).tolist()
        return cls.from_indices(b, s)

    def indices(self) -> tuple[list[int], list[int]]:
        return [BRANCH_CHOICES.index(f) for f in self.fractions], [int(s) for s in self.shortcuts]

    def channels(self) -> tuple[int, ...]:
        """Kept inner channels per block (BLOCKS order; 0: branch removed), as `materialise` slices them."""
        return tuple(inner_width(f, w) if f > 0 else 0 for f, w in zip(self.fractions, BLOCK_WIDTHS))

    def fits(self, multiple: int) -> bool:
        """Whether every kept inner channel count is a multiple of `multiple`."""
        return all(c % multiple == 0 for c in self.channels())

    def broken_blocks(self) -> list[str]:
        """Projection blocks with branch and shortcut both removed (their output is 0 for every input)."""
        return [p for p, kept in zip(PROJECTIONS, self.shortcuts)
                if not kept and self.fractions[BLOCKS.index(p)] == 0]

    def is_valid(self) -> bool:
        return not self.broken_blocks()

    def check_valid(self) -> None:
        broken = self.broken_blocks()
        if broken:
            raise HwnasError(f"invalid gate set: block(s) {', '.join(broken)} have both the branch and the "
                             f"projection shortcut removed, so the output no longer depends on the input")

    def arch(self) -> dict:
        """The architecture dict of `LatencyTable.predict` / `resnet_keys.pruned_keys`."""
        d = dict(zip(BLOCKS, self.fractions))
        d.update({downsample_name(p): float(s) for p, s in zip(PROJECTIONS, self.shortcuts)})
        return d

    def one_hot(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_branch (blocks, 5), w_shortcut (projections, 2)) of this gate set."""
        b, s = self.indices()
        wb = torch.zeros(len(BLOCKS), len(BRANCH_CHOICES), device=device)
        ws = torch.zeros(len(PROJECTIONS), 2, device=device)
        wb[torch.arange(len(BLOCKS)), torch.tensor(b)] = 1.0
        ws[torch.arange(len(PROJECTIONS)), torch.tensor(s)] = 1.0
        return wb, ws

    def describe(self) -> str:
        """Compact text: fractions per block, then the projection shortcuts (1 kept, 0 removed)."""
        return (" ".join(f"{f:g}" for f in self.fractions) + " | "
                + " ".join(str(int(s)) for s in self.shortcuts))


def round_gates(gates: GateSet, multiple: int) -> GateSet:
    """`gates` with each kept inner channel count rounded to the nearest multiple of `multiple` (`round_channels`):
    the choice of that width, which exists for every N in CHANNEL_MULTIPLES. Validity is kept (f > 0 stays > 0)."""
    check_channel_multiple(multiple)
    fractions = []
    for f, w in zip(gates.fractions, BLOCK_WIDTHS):
        target = round_channels(inner_width(f, w) if f > 0 else 0, multiple)
        fractions.append(next(c for c in BRANCH_CHOICES if (inner_width(c, w) if c > 0 else 0) == target))
    return GateSet(tuple(fractions), gates.shortcuts)


def _blocks(model: nn.Module) -> list[nn.Module]:
    blocks = [model.get_submodule(n) for n in BLOCKS]
    projections = tuple(n for n, b in zip(BLOCKS, blocks) if b.downsample is not None)
    if projections != PROJECTIONS:
        raise ValueError(f"not a ResNet18: projection blocks {projections}")
    return blocks


@torch.no_grad()
def reorder_by_importance(model: nn.Module) -> nn.Module:
    """Permute each block's inner channels (in place) by decreasing ‖conv1 filter‖₁ · |bn1 γ|;
    conv1's outputs, bn1 and conv2's inputs move together, so the network computes the same function."""
    for blk in _blocks(model):
        importance = blk.conv1.weight.abs().sum((1, 2, 3)) * blk.bn1.weight.abs()   # (W,)
        perm = torch.argsort(importance, descending=True, stable=True)
        blk.conv1.weight.copy_(blk.conv1.weight[perm])
        for t in (blk.bn1.weight, blk.bn1.bias, blk.bn1.running_mean, blk.bn1.running_var):
            t.copy_(t[perm])
        blk.conv2.weight.copy_(blk.conv2.weight[:, perm])
    return model


class GatedResNet18(nn.Module):
    """A torchvision ResNet18 (held, not copied) with relaxed gates; BN must be in eval mode. `batch_stats`: gated
    forwards normalise with batch statistics (module docstring)."""

    def __init__(self, model: nn.Module, batch_stats: bool = False):
        super().__init__()
        self.model, self.batch_stats = model, batch_stats
        for i, blk in enumerate(_blocks(model)):
            width = blk.conv1.out_channels
            keep = torch.zeros(len(BRANCH_CHOICES), width)
            for j, f in enumerate(BRANCH_CHOICES):
                keep[j, : inner_width(f, width) if f > 0 else 0] = 1.0
            self.register_buffer(f"keep{i}", keep, persistent=False)   # (5, W): choice j keeps channel c

    def forward(self, x: torch.Tensor, w_branch: torch.Tensor | None = None,
                w_shortcut: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; `w_branch` (blocks, 5) and `w_shortcut` (projections, 2) are relaxed gate weights
        (rows summing to 1; None: all on, which is exactly the torchvision network)."""
        m = self.model
        gated = w_branch is not None or w_shortcut is not None
        if gated and m.training:
            raise RuntimeError("the gated forward needs BN in eval mode (call .eval())")
        batch = gated and self.batch_stats

        def bn(layer: nn.BatchNorm2d, z: torch.Tensor) -> torch.Tensor:
            if not batch:
                return layer(z)
            return F.batch_norm(z, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)

        x = m.maxpool(m.relu(bn(m.bn1, m.conv1(x))))
        p = 0
        for i, blk in enumerate(_blocks(m)):
            identity = x
            if blk.downsample is not None:
                identity = bn(blk.downsample[1], blk.downsample[0](x))
                if w_shortcut is not None:
                    identity = identity * w_shortcut[p, 1]
                p += 1
            h = blk.relu(bn(blk.bn1, blk.conv1(x)))                          # (B, W, H', W')
            keep = getattr(self, f"keep{i}")                                # (5, W)
            if w_branch is None:
                out = bn(blk.bn2, blk.conv2(h))
            elif batch:
                mask = w_branch[i, 1:] @ keep[1:] + w_branch[i, 0] * keep[-1]   # removed: the full branch × 0
                out = (1 - w_branch[i, 0]) * bn(blk.bn2, blk.conv2(h * mask.view(1, -1, 1, 1)))
            else:
                out = blk.bn2(blk.conv2(h * (w_branch[i] @ keep).view(1, -1, 1, 1)))
                shift = blk.bn2(torch.zeros(1, blk.bn2.num_features, 1, 1, device=x.device, dtype=out.dtype))
                out = out - (1 - w_branch[i, 1:].sum()) * shift
            x = torch.relu(out + identity)
        return m.fc(torch.flatten(m.avgpool(x), 1))


def _position(name: str, blk: nn.Module) -> BlockPosition:
    # The resolution is not needed to build a block, only to key its latency.
    return BlockPosition(name, blk.conv1.in_channels, blk.conv2.out_channels, blk.conv1.stride[0], (0, 0),
                         blk.downsample is not None)


@torch.no_grad()
def materialise(model: nn.Module, gates: GateSet) -> nn.Module:
    """A plain copy of `model` (eval mode) at `gates`: removed branches and identity blocks are gone,
    kept branches are physically sliced to their first round(f·width) inner channels, removed
    projection shortcuts are gone. No masks, no multiplications by zero."""
    gates.check_valid()
    net = copy.deepcopy(model).eval()
    shortcuts = dict(zip(PROJECTIONS, gates.shortcuts))
    kept: dict[str, list[nn.Module]] = {}
    for name, blk, f in zip(BLOCKS, _blocks(net), gates.fractions):
        stage = name.split(".")[0]
        kept.setdefault(stage, [])
        if f == 0 and blk.downsample is None:
            continue   # identity block: nothing runs
        pb = PrunedBlock(_position(name, blk), f, shortcuts.get(name, True))
        if pb.branch is not None:
            k = inner_width(f, blk.conv1.out_channels)
            conv1, bn1, _, conv2, _ = pb.branch
            conv1.weight.copy_(blk.conv1.weight[:k])
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn1, attr).copy_(getattr(blk.bn1, attr)[:k])
            bn1.eps, bn1.num_batches_tracked = blk.bn1.eps, blk.bn1.num_batches_tracked.clone()
            conv2.weight.copy_(blk.conv2.weight[:, :k])
            pb.branch[4] = blk.bn2
        if pb.downsample is not None:
            pb.downsample = blk.downsample
        kept[stage].append(pb)
    for stage, blocks in kept.items():
        setattr(net, stage, nn.Sequential(*blocks))
    return net.eval()

"""What a lookup table covers: the space, its size parameters, and the keys it measures.

`SpaceConfig` is the frozen description stored in every table's sidecar; `OpKey` is one
row's identity. The key enumeration itself lives with each space (`darts_keys.py`,
`resnet_keys.py`) because it must walk exactly the wiring of that space's network.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

from hwnas.errors import HwnasError

SPACES = ("darts", "resnet18")
DTYPES = ("float32", "float16")


class OpKey(NamedTuple):
    """One measured thing: an op at a position (channels, resolution, stride) for a batch and dtype."""

    op: str
    c_in: int
    c_out: int
    h: int
    w: int
    stride: int
    batch: int
    dtype: str

    def __str__(self) -> str:
        return (f"{self.op}(c_in={self.c_in}, c_out={self.c_out}, {self.h}x{self.w}, stride={self.stride}, "
                f"batch={self.batch}, {self.dtype})")


KEY_COLUMNS = tuple(OpKey._fields)


@dataclass(frozen=True)
class SpaceConfig:
    """The space a table measures. `channels`/`layers`/`stem_multiplier` matter for darts only;
    resnet18's widths are fixed (64..512) and its stem follows the input size (`small_stem`)."""

    space: str = "darts"
    input_h: int = 8
    input_w: int = 8
    in_channels: int = 1
    channels: int = 8
    layers: int = 5
    batch: int = 64
    num_classes: int = 10
    dtype: str = "float32"
    stem_multiplier: int = 3
    steps: int = 4
    multiplier: int = 4

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise HwnasError(f"unknown space {self.space!r}; known: {', '.join(SPACES)}")
        if self.dtype not in DTYPES:
            raise HwnasError(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")
        for name in ("input_h", "input_w", "in_channels", "channels", "layers", "batch", "num_classes"):
            if getattr(self, name) < 1:
                raise HwnasError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.space == "darts" and self.channels % 2:
            # FactorizedReduce splits its output channels in two halves.
            raise HwnasError(f"--channels {self.channels}: the darts space needs an even channel count")
        if self.space == "darts" and self.layers < 3:
            raise HwnasError(f"--layers {self.layers}: the darts space needs at least 3 cells (two reductions)")

    @property
    def small_stem(self) -> bool:
        """resnet18: CIFAR-style 3×3/1 stem without max-pool for small inputs (≤ 64 px), else the ImageNet stem."""
        return max(self.input_h, self.input_w) <= 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SpaceConfig:
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:
            raise HwnasError(f"bad space parameters {d}: {e}") from None

    def cli_args(self) -> str:
        """The `hwnas profile` options that reproduce this space."""
        args = f"--space {self.space} --input-size {self.input_h}x{self.input_w} --in-channels {self.in_channels} " \
               f"--batch {self.batch} --classes {self.num_classes}"
        if self.space == "darts":
            args += f" --channels {self.channels} --layers {self.layers}"
        return args


def parse_input_size(text: str) -> tuple[int, int]:
    """'32x32' or '32' → (32, 32); anything else is a one-line error."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise HwnasError(f"--input-size {text!r}: expected HxW, e.g. 32x32") from None
    if len(parts) > 2 or h < 1 or w < 1:
        raise HwnasError(f"--input-size {text!r}: expected HxW with positive sizes, e.g. 32x32")
    return h, w


def half(n: int) -> int:
    """Output size of a stride-2 op (3×3 pad 1, 1×1 FactorizedReduce with padding): ceil(n / 2)."""
    return (n + 1) // 2

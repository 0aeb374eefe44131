"""Datasets, splits and device-resident batches with GPU-side augmentation.

Every dataset is loaded whole into uint8 CPU tensors ``(N, C, H, W)`` — the largest
(CIFAR) is 150 MB — so training never waits on a per-sample Python ``Dataset``.
:class:`DeviceLoader` moves the uint8 data to the compute device once and builds each
batch there: gather, augment, convert, normalise, all vectorised over the batch.

Nothing here runs on import; torchvision is imported only when a torchvision dataset
is asked for, because it is slow to import and ``digits``/``idx:DIR`` do not need it.
"""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwnas.distributed import shard_slice, world_size
from hwnas.errors import HwnasError

VALID_NAMES = "digits, idx:DIR, mnist, fashion-mnist, cifar10, cifar100"
_TORCHVISION = {  # name -> (torchvision class, number of classes)
    "mnist": ("MNIST", 10), "fashion-mnist": ("FashionMNIST", 10),
    "cifar10": ("CIFAR10", 10), "cifar100": ("CIFAR100", 100),
}
_SHAPES = {  # name -> (channels, height, width, classes), known without the files
    "digits": (1, 8, 8, 10), "mnist": (1, 28, 28, 10), "fashion-mnist": (1, 28, 28, 10),
    "cifar10": (3, 32, 32, 10), "cifar100": (3, 32, 32, 100),
}
_SPLIT_SEED = 0  # fixed held-out test splits (digits, single-pair idx) never move with --seed


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset; mean/std per channel in [0, 1] units."""

    name: str
    channels: int
    height: int
    width: int
    num_classes: int
    mean: tuple[float, ...]  # from the train split only
    std: tuple[float, ...]


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single-bool equality
class Splits:
    """uint8 images (N, C, H, W) and int64 labels (N,), all CPU tensors."""

    info: DatasetInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def dataset_shape(name: str, data_dir: str | Path | None = None) -> tuple[int, int, int, int]:
    """(channels, height, width, classes) of a dataset; needs no files for the named datasets,
    so a network can be built and sized (``hwnas train --epochs 0``) without downloading."""
    key = name.strip().lower()
    if key in _SHAPES:
        return _SHAPES[key]
    info = load_dataset(name, data_dir).info
    return info.channels, info.height, info.width, info.num_classes


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> Splits:
    """Load ``digits``, ``idx:DIR``, ``mnist``, ``fashion-mnist``, ``cifar10`` or ``cifar100``.

    ``data_dir`` (default ``./data``) and ``download`` apply to the torchvision datasets.
    Raises :class:`HwnasError` on an unknown name or missing/malformed data."""
    key = name.strip().lower()
    if key == "digits":
        (x_tr, y_tr, x_te, y_te), classes = _load_digits(), 10
    elif key.startswith("idx:"):
        x_tr, y_tr, x_te, y_te = _load_idx_dir(name.strip()[4:])  # the DIR keeps its case
        classes, key = int(max(y_tr.max(), y_te.max())) + 1, "idx"
    elif key in _TORCHVISION:
        (x_tr, y_tr, x_te, y_te), classes = _load_torchvision(key, data_dir, download), _TORCHVISION[key][1]
    else:
        raise HwnasError(f"unknown dataset {name!r}; pass one of: {VALID_NAMES}")
    info = DatasetInfo(key, *x_tr.shape[1:], classes, *_channel_stats(x_tr))
    return Splits(info, x_tr.contiguous(), y_tr.long(), x_te.contiguous(), y_te.long())


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std (population) of uint8 images, in [0, 1] units.

    A 256-bin histogram per channel gives exact sums without a float copy of the data
    (a float64 copy of CIFAR-10's train split would be 1.2 GB)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        m = float((counts * values).sum() / n)
        var = float((counts * values**2).sum() / n) - m * m
        s = math.sqrt(max(var, 0.0))
        means.append(m)
        stds.append(s if s > 1e-12 else 1.0)  # constant channel: normalise to 0, not inf
    return tuple(means), tuple(stds)


def _stratified_split(y: np.ndarray, test_size: float):
    """Indices (train, test) of a seeded stratified split; unstratified when a class is too
    small to stratify (sklearn refuses), which only happens on toy data."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        return train_test_split(idx, test_size=test_size, stratify=y, random_state=_SPLIT_SEED)
    except ValueError:
        return train_test_split(idx, test_size=test_size, random_state=_SPLIT_SEED)


def _load_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8), 0..16 -> 0..255
    y = d.target.astype(np.int64)
    tr, te = _stratified_split(y, 0.2)
    t = torch.from_numpy
    return t(x[tr]), t(y[tr]), t(x[te]), t(y[te])


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (the MNIST format), gzip or plain, as a uint8 tensor.

    Layout: two zero bytes, type code 0x08 (unsigned byte), ndim, then ndim big-endian
    uint32 sizes, then the data. Anything else is a :class:`HwnasError` naming the file."""
    path = Path(path)
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; truncated gzip is EOFError
        raise HwnasError(f"cannot read IDX file {path}: {e}; pass a directory of valid IDX files") from e

    def bad(why: str) -> HwnasError:
        return HwnasError(f"malformed IDX file {path}: {why}; pass valid MNIST-format (IDX) files")

    if len(raw) < 4 or raw[0:2] != b"\x00\x00":
        raise bad("bad magic number (expected 0x0000 then type code and ndim)")
    if raw[2] != 0x08:
        raise bad(f"type code 0x{raw[2]:02x} is not 0x08 (unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise bad(f"header is truncated or declares {ndim} dimensions")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise bad(f"sizes {dims} need {expected} data bytes, file has {len(raw) - header}")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(arr.copy())  # copy: frombuffer views are read-only


def _load_idx_dir(dir_str: str):
    if not dir_str:
        raise HwnasError("dataset 'idx:' needs a directory; pass idx:DIR")
    root = Path(dir_str).expanduser().resolve()
    if not root.is_dir():
        raise HwnasError(f"IDX directory {root} does not exist; pass idx:DIR with MNIST-format files")
    # Deduplicate "x" and "x.gz" (same file, both forms), preferring the plain one.
    files: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        stem = p.name[:-3] if p.name.lower().endswith(".gz") else p.name
        if p.is_file() and (stem not in files or not p.name.lower().endswith(".gz")):
            files[stem] = p
    images = [p for s, p in files.items() if "idx3" in s.lower()]
    labels = [p for s, p in files.items() if "idx1" in s.lower()]
    if not images or not labels:
        raise HwnasError(f"no IDX image/label pair (names containing idx3/idx1) in {root}; pass idx:DIR holding one")

    if len(images) == 1 and len(labels) == 1:
        x, y = _read_pair(images[0], labels[0])
        tr, te = _stratified_split(y.numpy(), 1 / 6)
        tr, te = torch.from_numpy(tr), torch.from_numpy(te)
        return x[tr], y[tr], x[te], y[te]

    def role(p: Path) -> str | None:
        n = p.name.lower()
        return "train" if n.startswith("train") else "test" if n.startswith(("t10k", "test")) else None

    pick = {r: ([p for p in images if role(p) == r], [p for p in labels if role(p) == r]) for r in ("train", "test")}
    if any(len(im) != 1 or len(lb) != 1 for im, lb in pick.values()):
        found = ", ".join(p.name for p in images + labels)
        raise HwnasError(
            f"cannot tell the IDX pairs apart in {root} (found {found}); "
            "pass a directory with one pair, or one train* pair and one t10k*/test* pair"
        )
    x_tr, y_tr = _read_pair(pick["train"][0][0], pick["train"][1][0])
    x_te, y_te = _read_pair(pick["test"][0][0], pick["test"][1][0])
    if x_tr.shape[1:] != x_te.shape[1:]:
        sizes = f"{tuple(x_tr.shape[2:])} vs {tuple(x_te.shape[2:])}"
        raise HwnasError(f"train and test images differ in size ({sizes}) in {root}; pass matching IDX files")
    return x_tr, y_tr, x_te, y_te


def _read_pair(image_path: Path, label_path: Path):
    x, y = read_idx(image_path), read_idx(label_path)
    if x.ndim != 3 or y.ndim != 1:
        raise HwnasError(f"{image_path} / {label_path} are {x.ndim}-d / {y.ndim}-d, not images (N, H, W) / "
                         "labels (N,); pass an idx3 and an idx1 file")
    if len(x) != len(y):
        raise HwnasError(f"{image_path.name} has {len(x)} images but {label_path.name} has {len(y)} labels; "
                         "pass a matching pair")
    return x.unsqueeze(1), y.long()  # (N, 1, H, W), (N,)


def _load_torchvision(name: str, data_dir, download: bool):
    import torchvision.datasets as tvd  # lazy: slow import, only needed here

    root = Path(data_dir if data_dir is not None else "./data").expanduser().resolve()
    cls = getattr(tvd, _TORCHVISION[name][0])
    try:
        parts = [cls(root=str(root), train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError) as e:  # torchvision: RuntimeError; urllib: URLError (an OSError)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if download:
            raise HwnasError(
                f"could not download {name} into {root} ({first}); check the network connection, "
                "or fetch the files elsewhere and pass --data-dir DIR"
            ) from e
        raise HwnasError(
            f"{name} not found (or incomplete) in {root}; pass --data-dir DIR where it is, or --download to fetch it"
        ) from e
    out = []
    for ds in parts:
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.uint8)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # MNIST (N,H,W); CIFAR (N,H,W,C)
        out += [x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
    return tuple(out)


def search_split(x: torch.Tensor, y: torch.Tensor, seed: int):
    """DARTS-style search split: a seeded permutation of the train set cut into halves.

    Returns ``((x_w, y_w), (x_a, y_a))``: the weights half and the architecture half
    (the latter gets the extra sample when N is odd)."""
    return _seeded_cut(x, y, seed, len(x) // 2)


ONE_LEVEL_HELD_OUT = 0.2  # share of the training set a one-level search keeps out for val_acc, S and L̄


def one_level_split(x: torch.Tensor, y: torch.Tensor, seed: int):
    """A one-level search trains w and α on one loss, so it has no architecture split; a held-out
    part (the tail of the same seeded permutation as `search_split`) still measures val_acc and Λ's
    L̄ and S on samples the search never trained on (issue #16.2: it used to evaluate on training data)."""
    return _seeded_cut(x, y, seed, len(x) - max(1, round(ONE_LEVEL_HELD_OUT * len(x))))


def _seeded_cut(x: torch.Tensor, y: torch.Tensor, seed: int, cut: int):
    """A seeded permutation of (x, y), cut after `cut` samples."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g).to(x.device)
    return (x[perm[:cut]], y[perm[:cut]]), (x[perm[cut:]], y[perm[cut:]])


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation: random crop with zero padding, horizontal flip, cutout."""

    crop_padding: int = 0  # pixels of zero padding for the random crop (0 = off)
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of the cutout square in pixels (0 = off)


def default_augment(info: DatasetInfo, cutout: int = 0) -> AugmentConfig:
    """The usual augmentation for a dataset. Digits are never flipped: a flip changes their meaning."""
    if info.name == "digits":
        return AugmentConfig(crop_padding=1, flip=False, cutout=cutout)
    if info.name.startswith("cifar"):
        return AugmentConfig(crop_padding=4, flip=True, cutout=cutout)
    return AugmentConfig(crop_padding=2, flip=False, cutout=cutout)  # mnist, fashion-mnist, idx


def random_crop(x: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop each image of (B, C, H, W) from its zero-padded copy at ``offsets`` (B, 2) = (dy, dx)
    in [0, 2*padding]; one gather for the batch. Returns (B, C, H, W), same dtype."""
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device) + offsets[:, :1] - padding  # (B, H) source rows
    cols = torch.arange(w, device=x.device) + offsets[:, 1:] - padding  # (B, W) source cols
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices split by a slice put their dims first: (B, H, W, C).
    out = x[bidx, :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    out = torch.where(inside[..., None], out, torch.zeros((), dtype=x.dtype, device=x.device))
    return out.permute(0, 3, 1, 2)  # (B, C, H, W), channels_last strides


def random_flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flip horizontally the images of (B, C, H, W) where ``mask`` (B,) is True."""
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, centres: torch.Tensor, length: int) -> torch.Tensor:
    """Zero a length×length square per image at ``centres`` (B, 2) = (cy, cx), clipped at the
    borders. Rows cy - length//2 .. cy - length//2 + length - 1 (the DARTS reference for even
    lengths; for odd ones it zeroes length-1, this zeroes length)."""
    _, _, h, w = x.shape
    y0, x0 = centres[:, :1] - length // 2, centres[:, 1:] - length // 2  # (B, 1)
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    square = ((r >= y0) & (r < y0 + length))[:, :, None] & ((c >= x0) & (c < x0 + length))[:, None, :]  # (B, H, W)
    return x.masked_fill(square[:, None], 0)


class DeviceLoader:
    """Batches from tensors resident on the compute device; augmentation done there on
    whole batches; no per-sample Python work in the hot loop.

    All randomness (permutation, crop offsets, flips, cutout centres) comes from one CPU
    ``torch.Generator`` and is drawn for the whole epoch when iteration starts, then moved
    to the device: batches are then identical on every device, and :meth:`state_dict`
    taken at any point during or after an epoch is the state the next epoch starts from.

    Order of operations follows torchvision/DARTS: crop (padding with raw pixel 0, as
    ``RandomCrop(padding=p)`` does) and flip on uint8, then normalise, then cutout
    (zeros in normalised space, i.e. the mean pixel, as the DARTS ``Cutout`` does).
    """

    def __init__(self, x_uint8, y, info: DatasetInfo, batch_size: int, *, device, shuffle: bool,
                 augment: AugmentConfig | None = None, drop_last: bool = False,
                 generator_seed: int = 0, dtype=torch.float32, channels_last: bool = False, shard: bool = False):
        # ValueError, not HwnasError: wrong tensors here are a caller's bug, not a user's input.
        if x_uint8.dtype != torch.uint8 or tuple(x_uint8.shape[1:]) != (info.channels, info.height, info.width):
            raise ValueError(f"expected uint8 (N, {info.channels}, {info.height}, {info.width}) images of {info.name}, "
                             f"got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        if len(y) != len(x_uint8):
            raise ValueError(f"{len(x_uint8)} images but {len(y)} labels")
        if batch_size < 1:
            raise HwnasError(f"batch size must be at least 1, got {batch_size}; pass --batch-size N")
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device)  # stays uint8: 4x less device memory than float
        self.y = y.to(self.device, torch.int64)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.dtype, self.channels_last = augment, dtype, channels_last
        # Normalise in float32 even for half dtypes, then cast: fp16/bf16 lose digits in x*scale - shift.
        self.work_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        std = torch.tensor(info.std, dtype=torch.float64)
        scale, shift = 1.0 / (255.0 * std), torch.tensor(info.mean, dtype=torch.float64) / std
        self.scale = scale.to(self.device, self.work_dtype).view(1, -1, 1, 1)
        self.shift = shift.to(self.device, self.work_dtype).view(1, -1, 1, 1)
        self.generator = torch.Generator(device="cpu").manual_seed(generator_seed)
        # Under torchrun (`shard`): every rank draws the same epoch (same generator) and yields its contiguous
        # slice of each global batch, so the ranks' slices together are exactly the one-process batch.
        self.shards = world_size() if shard else 1

    def __len__(self) -> int:
        n = len(self.x)
        if self.drop_last or 0 < n % self.batch_size < self.shards:  # a last batch too small to give every rank
            return n // self.batch_size                                  # a sample is left out under torchrun
        return math.ceil(n / self.batch_size)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, d: dict) -> None:
        self.generator.set_state(d["generator"])

    def _draw_epoch(self) -> dict[str, torch.Tensor]:
        """All of an epoch's random numbers, in a fixed order, on CPU then on device."""
        n, (h, w), g, aug = len(self.x), self.x.shape[2:], self.generator, self.augment
        r = {"order": torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)}
        if aug is not None and aug.crop_padding > 0:
            r["crop"] = torch.randint(0, 2 * aug.crop_padding + 1, (n, 2), generator=g)
        if aug is not None and aug.flip:
            r["flip"] = torch.rand(n, generator=g) < 0.5
        if aug is not None and aug.cutout > 0:
            cy, cx = torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)
            r["cutout"] = torch.stack([cy, cx], 1)  # (N, 2), centre uniform over the image as in DARTS
        return {k: v.to(self.device, non_blocking=True) for k, v in r.items()}

    def __iter__(self):
        rnd = self._draw_epoch()  # eager, not inside the generator: state_dict() is then well defined
        return self._batches(rnd)

    def _batches(self, rnd: dict[str, torch.Tensor]):
        aug, bs = self.augment, self.batch_size
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for i in range(len(self)):
            sl = slice(i * bs, min((i + 1) * bs, len(self.x)))
            if self.shards > 1:  # this rank's part of the global batch, positions within the epoch's draws
                part = shard_slice(sl.stop - sl.start)
                sl = slice(sl.start + part.start, sl.start + part.stop)
            idx = rnd["order"][sl]
            xb = self.x[idx]  # (B, C, H, W) uint8
            if "crop" in rnd:
                xb = random_crop(xb, rnd["crop"][sl], aug.crop_padding)
            if "flip" in rnd:
                xb = random_flip(xb, rnd["flip"][sl])
            xb = xb.to(self.work_dtype) * self.scale - self.shift
            if "cutout" in rnd:
                xb = cutout(xb, rnd["cutout"][sl], aug.cutout)
            yield xb.to(self.dtype).contiguous(memory_format=fmt), self.y[idx]

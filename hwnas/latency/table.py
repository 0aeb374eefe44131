"""`LatencyTable`: a measured lookup table (CSV + JSON sidecar), validated on load.

The CSV holds one row per key (`op, c_in, c_out, h, w, stride, batch, dtype`) with its
timing (`p50_ms, p10_ms, p90_ms, n`, plus `mean_ms, n_outliers`). The sidecar `X.csv.json`
says where and how it was measured (device, backend and version, threads, torch/hwnas
versions, date, timing rule), which space it covers, and — after `hwnas calibrate` — the
fitted correction that `predict` applies.

Latencies are p50 values in milliseconds. An op timed alone pays one session call (ONNX
Runtime with IO binding: ~2 µs here, more than many ops of a small network take); a whole network pays one in
all. The profiler measures that call on an empty model, among each chunk's keys, and records it in the sidecar as
`call_overhead_ms` = c, and a key's cost is its p50 minus c (never below 0). A prediction is
c plus the sum over the network's keys (stem, per-cell preprocessing, chosen ops, glue, head),
grouped by kind so that a per-kind correction can scale each group:
corrected = Σ_k scale_k · S_k + intercept, plus, for the `linear+params` correction, a cost per
million weights of the network (an op timed alone, again and again, finds its weights in cache; in a
whole network whose weights exceed the cache they stream from memory: measured, a ResNet18 whose
late layers are kept is slower than its ops' sum says, one whose late layers are pruned faster).
The weights of a key are counted on the module the profiler times (`LatencyTable.key_params`).
For the `linear+kernels` correction (ONNX Runtime CPU tables), a cost per kernel that ONNX Runtime runs for the
whole network after fusing across ops (`hwnas.latency.kernels`; `LatencyTable.kernels` counts them on an export).
Tables without `call_overhead_ms` (older ones, torch eager, GPU backends) have c = 0: the plain sum.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import torch

from hwnas.errors import HwnasError, HwnasWarning
from hwnas.latency import darts_keys as dk
from hwnas.latency import resnet_keys as rk
from hwnas.latency.space import KEY_COLUMNS, OpKey, SpaceConfig
from hwnas.runs import atomic_write
from hwnas.spaces.genotype import Genotype, num_edges
from hwnas.spaces.ops import PRIMITIVES

TIMING_COLUMNS = ("p50_ms", "p10_ms", "p90_ms", "n")
REQUIRED_COLUMNS = KEY_COLUMNS + TIMING_COLUMNS
SIDECAR_FIELDS = ("device", "backend", "threads", "space")
INT_COLUMNS = ("c_in", "c_out", "h", "w", "stride", "batch", "n")


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def op_kind(op: str) -> str:
    return rk.op_kind(op) if op.startswith("resnet_") else dk.op_kind(op)


def _check_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise HwnasError(f"{where} is not a latency table: missing column(s) {', '.join(missing)}")
    frame = frame.copy()
    frame["op"] = frame["op"].astype(str)
    frame["dtype"] = frame["dtype"].astype(str)
    for col in [c for c in frame.columns if c not in ("op", "dtype")]:
        if col in REQUIRED_COLUMNS or col.endswith("_ms"):
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = values.isna()
            if bad.any():
                row = int(bad.idxmax())
                raise HwnasError(f"{where}: column {col} row {row + 2} holds {frame[col].iloc[row]!r}, not a number")
            frame[col] = values.astype(int) if col in INT_COLUMNS else values.astype(float)
    dup = frame.duplicated(list(KEY_COLUMNS))
    if dup.any():
        raise HwnasError(f"{where}: key {_row_key(frame.loc[dup.idxmax()])} appears more than once")
    if (frame["p50_ms"] < 0).any():
        raise HwnasError(f"{where}: negative latency in p50_ms")
    return frame.reset_index(drop=True)


def _row_key(row) -> OpKey:
    return OpKey(str(row["op"]), *(int(row[c]) for c in KEY_COLUMNS[1:-1]), str(row["dtype"]))


class LatencyTable:
    """A validated table; build with `load`, or from rows and a sidecar dict."""

    def __init__(self, frame: pd.DataFrame, meta: dict, path: str | Path | None = None):
        self.path = Path(path) if path else None
        where = str(self.path or "latency table")
        missing = [f for f in SIDECAR_FIELDS if f not in meta]
        if missing:
            raise HwnasError(f"{where}: sidecar lacks {', '.join(missing)}; re-run hwnas profile to rebuild it")
        self.meta = dict(meta)
        self.frame = _check_frame(frame, where)
        self.call_overhead_ms = float(self.meta.get("call_overhead_ms") or 0.0)
        if not (0.0 <= self.call_overhead_ms < float("inf")):
            raise HwnasError(f"{where}: call_overhead_ms must be a non-negative number, "
                             f"not {self.meta.get('call_overhead_ms')!r}")
        self._measured = {_row_key(r): float(r["p50_ms"]) for _, r in self.frame.iterrows()}
        self._p50 = {k: max(ms - self.call_overhead_ms, 0.0) for k, ms in self._measured.items()}
        self._params: dict[OpKey, int] = {}
        self._kernels: dict[str, int] = {}
        self._kernel_mismatch: tuple[int, int] | None | bool = False   # False: not checked yet

    # ---- files ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise HwnasError(f"no latency table at {path}; build one with hwnas profile --device D --space S "
                             f"--out {path}")
        side = sidecar_path(path)
        if not side.is_file():
            raise HwnasError(f"{path} has no sidecar {side.name}: a table without it cannot say which device it "
                             f"measured; rebuild it with hwnas profile")
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HwnasError(f"{side} is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise HwnasError(f"{side} must hold a JSON object")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
            raise HwnasError(f"{path} is not a readable CSV table: {str(e).splitlines()[0]}") from None
        return cls(frame, meta, path)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the CSV and the sidecar, each atomically (temporary file + rename)."""
        path = Path(path or self.path)
        atomic_write(path, lambda f: self.frame.to_csv(f, index=False, float_format="%.6g"))
        self.save_meta(path)
        self.path = path
        return path

    def save_meta(self, path: str | Path | None = None) -> None:
        path = Path(path or self.path)
        atomic_write(sidecar_path(path), lambda f: f.write((json.dumps(self.meta, indent=2) + "\n").encode()))

    # ---- keys ----------------------------------------------------------------------------
    @property
    def space(self) -> SpaceConfig:
        return SpaceConfig.from_dict(self.meta["space"])

    @property
    def backend(self) -> str:
        return self.meta["backend"]

    def signature(self) -> dict:
        """What must agree before two tables may be mixed."""
        return {k: self.meta.get(k) for k in ("device", "backend", "threads")}

    def keys(self) -> list[OpKey]:
        return list(self._p50)

    def __contains__(self, key: OpKey) -> bool:
        return key in self._p50

    def __len__(self) -> int:
        return len(self._p50)

    def profile_command(self) -> str:
        out = f" --out {self.path}" if self.path else ""
        return (f"hwnas profile --device {self.backend} --threads {self.meta['threads']} "
                f"{self.space.cli_args()}{out}")

    def measured_ms(self, key: OpKey) -> float:
        """The key's median as the profiler measured it (the call overhead not taken off)."""
        return self._measured[key]

    def lookup(self, key: OpKey) -> float:
        """A key's cost in a network, ms: its p50 less the session call it paid when timed alone
        (`call_overhead_ms`). A missing key names itself and the command that measures it."""
        try:
            return self._p50[key]
        except KeyError:
            raise HwnasError(f"latency table {self.path or ''} has no key {key}; measure it with: "
                             f"{self.profile_command()}") from None

    # ---- predictions ---------------------------------------------------------------------
    def arch_keys(self, arch: Genotype | dict | str | torch.nn.Module) -> list[OpKey]:
        """The keys of a DARTS genotype (or its string), of a pruned ResNet18 given as {block: width fraction}, or
        of a network that carries its architecture (`run.network(λ)`'s `hwnas_arch`, a DiscreteNetwork's genotype)."""
        arch = _architecture(arch)
        space = self.space
        if isinstance(arch, Genotype):
            if space.space != "darts":
                raise HwnasError(f"a genotype needs a darts table; {self.path} measures {space.space}")
            return dk.genotype_keys(space, arch)
        if space.space != "resnet18":
            raise HwnasError(f"a {{block: fraction}} architecture needs a resnet18 table; {self.path} measures "
                             f"{space.space}")
        return rk.pruned_keys(space, arch)

    def breakdown(self, arch: Genotype | dict | str | torch.nn.Module) -> dict[str, float]:
        """Uncorrected ms per kind (conv, pool, skip, fixed; or branch, shortcut, fixed); the
        network's one session call is part of `fixed`."""
        return self._parts(self.arch_keys(arch))

    def _parts(self, keys: list[OpKey]) -> dict[str, float]:
        parts: dict[str, float] = {"fixed": self.call_overhead_ms} if self.call_overhead_ms else {}
        for key in keys:
            parts[op_kind(key.op)] = parts.get(op_kind(key.op), 0.0) + self.lookup(key)
        return parts

    def key_params(self, key: OpKey) -> int:
        """Weights (parameters) of the module the profiler times for `key` (cached)."""
        if key not in self._params:
            module_of = dk.darts_module if self.space.space == "darts" else rk.resnet_module
            self._params[key] = sum(p.numel() for p in module_of(key, self.space)[0].parameters())
        return self._params[key]

    def features(self, arch: Genotype | dict | str | torch.nn.Module, kernels: bool = False) -> dict[str, float]:
        """Whole-network quantities a correction may use besides the per-kind times: `params_m`, the
        network's weights in millions (the sum over its keys), and with `kernels` (on a backend that has the
        count, `kernels.KERNEL_BACKENDS`) `kernels`, the nodes ONNX Runtime runs for it after optimisation."""
        return self._features(self.arch_keys(arch), arch if kernels else None)

    def kernels(self, arch: Genotype | dict | str | torch.nn.Module) -> int | None:
        """Kernels ONNX Runtime runs for the whole network after its graph optimisations, with this table's backend
        set-up (`hwnas.latency.kernels`); None on a backend where that count does not describe what is timed.
        Counted once per architecture (an export, 0.3 s at 8×8)."""
        from hwnas.latency.kernels import KERNEL_BACKENDS, network_kernels
        from hwnas.latency.measure import table_backend_config

        if self.backend not in KERNEL_BACKENDS:
            return None
        arch = _architecture(arch)
        ident = str(arch) if isinstance(arch, Genotype) else repr(sorted(arch.items()))
        if ident not in self._kernels:
            self._kernels[ident] = network_kernels(self.space, arch, table_backend_config(self))
        return self._kernels[ident]

    def kernel_mismatch(self) -> tuple[int, int] | None:
        """(kernels here, kernels at calibration) of the calibration's reference network when they differ, else None.
        ONNX Runtime's fusion depends on the CPU (its NCHWc layout needs other reorders on an AVX2-only CPU than on
        one with AVX-512: the shipped mobile 8×8 table's networks count 135–166 kernels here against 166–201 where
        it was calibrated), and a correction priced per kernel holds for the machine it was fitted on. Checked once
        (one count, 0.3 s); a stored correction that uses the count is then warned about (`HwnasWarning`)."""
        if self._kernel_mismatch is False:
            ref = (self.meta.get("calibration") or {}).get("kernel_reference")
            now = self.kernels(ref["architecture"]) if ref else None   # None on a backend without the count
            self._kernel_mismatch = (now, int(ref["kernels"])) if now is not None and now != ref["kernels"] else None
            if self._kernel_mismatch and (self.correction or {}).get("per_kernel"):
                from hwnas.info import cpu_model

                there = self.meta.get("cpu_model") or "not recorded"
                warnings.warn(f"{self.path or 'the table'}: ONNX Runtime fuses networks differently on this machine "
                              f"than where the table was calibrated ({now} kernels here, {ref['kernels']} there for "
                              f"its reference network: another CPU? here {cpu_model()}, the table's {there}); its "
                              f"per-kernel correction was fitted on that machine's counts: profile and calibrate on "
                              f"the machine you deploy to", HwnasWarning, stacklevel=3)
        return self._kernel_mismatch

    def _features(self, keys: list[OpKey], arch=None) -> dict[str, float]:
        """`params_m` from the keys; with `arch`, also `kernels` where the backend has the count."""
        feats = {"params_m": sum(self.key_params(k) for k in keys) / 1e6}
        if arch is not None and (count := self.kernels(arch)) is not None:
            feats["kernels"] = float(count)
        return feats

    @property
    def correction(self) -> dict | None:
        return (self.meta.get("calibration") or {}).get("correction")

    def predict(self, arch: Genotype | dict | str | torch.nn.Module, corrected: bool = True) -> float:
        """Predicted latency in ms of a genotype (or its string), a ResNet18 gate dict, or a network that carries
        its architecture (`run.network(λ)`): the per-key sum, with the calibration's correction when there is one.
        The prediction is for the table's own space (channels, cells, input size)."""
        corr = self.correction if corrected else None
        keys = self.arch_keys(arch)   # once: a ResNet18's keys are found by building the network
        feats = (self._features(keys, arch if corr.get("per_kernel") else None)
                 if corr and (corr.get("per_param_m") or corr.get("per_kernel")) else None)
        if feats and "kernels" in feats:
            self.kernel_mismatch()
        return apply_correction(self._parts(keys), corr, feats)

    def edge_costs(self, corrected: bool = False) -> torch.Tensor:
        """T for the search's cost term: (layers, n_edges, n_ops) ms of op o on edge e of cell l,
        in `PRIMITIVES` column order and the supernet's edge order; `none` = 0. With `corrected`,
        each op is scaled by its kind's calibrated scale and pays the correction's cost of its weights, if it
        has one (linear in γ like the rest; an intercept does not depend on γ). A cost per kernel is left out
        like the intercept: how many kernels fusion leaves depends on which ops meet, not on one edge's γ."""
        space = self.space
        if space.space != "darts":
            raise HwnasError("edge costs exist for the darts space only")
        corr = (self.correction or {}) if corrected else {}
        scale, default = corr.get("scale", {}), corr.get("default_scale", 1.0)
        per_param = corr.get("per_param_m", 0.0) / 1e6
        t = torch.zeros(space.layers, num_edges(space.steps), len(PRIMITIVES))
        for cell in dk.cell_positions(space):
            e = 0
            for i in range(space.steps):
                for j in range(i + 2):
                    for o, op in enumerate(PRIMITIVES):
                        key = dk.edge_key(space, cell, op, j)
                        if key is not None:
                            t[cell.index, e, o] = (self.lookup(key) * scale.get(dk.op_kind(op), default)
                                                   + (per_param * self.key_params(key) if per_param else 0.0))
                    e += 1
        return t

    def combine(self, other: LatencyTable, allow_mixed_devices: bool = False) -> LatencyTable:
        """Rows of both tables (this one's win on a shared key). Tables measured on different
        devices, backends or thread counts refuse to mix unless `allow_mixed_devices`."""
        if self.signature() != other.signature() and not allow_mixed_devices:
            diff = {k: (v, other.signature()[k]) for k, v in self.signature().items() if v != other.signature()[k]}
            raise HwnasError(f"refusing to mix tables from different devices/backends {diff}; pass "
                             f"allow_mixed_devices=True if that is really meant")
        frame = pd.concat([self.frame, other.frame]).drop_duplicates(list(KEY_COLUMNS), keep="first")
        meta = dict(self.meta, calibration=None,
                    combined_with=[*self.meta.get("combined_with", []), other.signature()])
        if self.signature() != other.signature():
            meta["mixed_devices"] = True
        return LatencyTable(frame, meta)


def _architecture(arch) -> Genotype | dict:
    if isinstance(arch, (Genotype, dict)):
        return arch
    if isinstance(arch, str):
        return Genotype.parse(arch)
    found = getattr(arch, "hwnas_arch", None) or getattr(arch, "genotype", None)
    if isinstance(found, (Genotype, dict)):
        return found
    raise HwnasError(f"cannot tell the architecture of a {type(arch).__name__}: give a Genotype, a gate dict, or a "
                     f"network from run.network(λ)")


def apply_correction(parts: dict[str, float], correction: dict | None, features: dict[str, float] | None = None) -> float:
    """Σ_k scale_k · S_k + per_param_m · params_m + per_kernel · kernels + intercept (no correction: the plain
    sum). `features` (`LatencyTable.features`) is needed by a correction with a cost per weight or per kernel."""
    if not correction:
        return float(sum(parts.values()))
    scale = correction.get("scale", {})
    default = correction.get("default_scale", 1.0)
    out = sum(scale.get(k, default) * v for k, v in parts.items()) + correction.get("intercept", 0.0)
    if correction.get("per_param_m"):
        if features is None:
            raise ValueError("this correction has a cost per weight: give the network's features")
        out += correction["per_param_m"] * features["params_m"]
    if correction.get("per_kernel"):
        if features is None or "kernels" not in features:
            raise ValueError("this correction has a cost per kernel: give the network's features with kernels")
        out += correction["per_kernel"] * features["kernels"]
    return float(out)

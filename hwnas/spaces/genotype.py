"""`Genotype`: a discrete DARTS cell pair, its string and JSON forms, and its derivation.

The string form is the one the DARTS reference code prints,
`Genotype(normal=[('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])`;
under Python 3 the reference prints `normal_concat=range(2, 6)`, which is parsed too.
Parsing walks the Python syntax tree and evaluates only literals, never `eval`.
"""
from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hwnas.errors import HwnasError
from hwnas.spaces.ops import OPS, PRIMITIVES

Edge = tuple[str, int]  # (operation name, index of the input state)


@dataclass(frozen=True)
class Genotype:
    """Two cells (normal, reduce): two incoming edges per intermediate node, plus which states are concatenated."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for cell in ("normal", "reduce"):
            edges = tuple((str(op), int(j)) for op, j in getattr(self, cell))
            concat = tuple(int(i) for i in getattr(self, cell + "_concat"))
            object.__setattr__(self, cell, edges)
            object.__setattr__(self, cell + "_concat", concat)
            _validate_cell(cell, edges, concat)

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def __str__(self) -> str:
        def edges(es: Sequence[Edge]) -> str:
            return "[" + ", ".join(f"({op!r}, {j})" for op, j in es) + "]"

        return (
            f"Genotype(normal={edges(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={edges(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )

    def to_dict(self) -> dict:
        return {
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Genotype:
        try:
            return cls(
                normal=tuple(tuple(e) for e in d["normal"]),
                normal_concat=tuple(d["normal_concat"]),
                reduce=tuple(tuple(e) for e in d["reduce"]),
                reduce_concat=tuple(d["reduce_concat"]),
            )
        except KeyError as e:
            raise HwnasError(f"genotype is missing the field {e}") from None
        except (TypeError, ValueError) as e:
            raise HwnasError(f"not a genotype: {e}") from None

    def record(self) -> dict:
        """The genotype.json content: the structured form and the DARTS string."""
        return {"genotype": self.to_dict(), "darts": str(self)}

    def to_json(self) -> str:
        return json.dumps(self.record(), indent=2)

    @classmethod
    def parse(cls, text: str) -> Genotype:
        """Parse the DARTS reference string form (lists or `range(a, b)` for the concats)."""
        try:
            call = ast.parse(text.strip(), mode="eval").body
        except SyntaxError:
            raise HwnasError(f"cannot parse genotype string: {text[:80]!r}") from None
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Genotype"):
            raise HwnasError("a genotype string must look like Genotype(normal=[...], normal_concat=..., "
                             "reduce=[...], reduce_concat=...)")
        fields = {kw.arg: _literal(kw.value) for kw in call.keywords}
        for cell in ("normal", "reduce"):
            _check_range(cell, fields.get(cell), fields.get(cell + "_concat"))
        return cls.from_dict(fields)


def _literal(node: ast.expr):
    """A literal, or `range(a[, b[, c]])` with literal ints (the reference's Python 3 print form), kept a
    lazy `range` until its bounds are checked: `range(2, 20000000)` must be refused, not listed."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range":
        try:
            return range(*(ast.literal_eval(a) for a in node.args))
        except (TypeError, ValueError, SyntaxError):
            raise HwnasError(f"genotype: {ast.unparse(node)!r} is not range(a, b) of integers") from None
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise HwnasError(f"unexpected expression in genotype: {ast.unparse(node)!r}") from None


def _check_range(cell: str, edges, concat) -> None:
    """A `range` concat names states of its cell only (checked from its ends, in constant time and memory)."""
    if not isinstance(concat, range):
        return
    n_states = len(edges) // 2 + 2 if isinstance(edges, (list, tuple)) else 2
    if not concat or min(concat[0], concat[-1]) < 0 or max(concat[0], concat[-1]) >= n_states:
        raise HwnasError(f"genotype {cell}_concat {concat} must name states in 0..{n_states - 1} (the cell has "
                         f"{n_states - 2} nodes), e.g. range(2, {n_states})")


def _validate_cell(cell: str, edges: tuple[Edge, ...], concat: tuple[int, ...]) -> None:
    if not edges or len(edges) % 2:
        raise HwnasError(f"genotype {cell} cell needs two edges per node, got {len(edges)} edges")
    for k, (op, j) in enumerate(edges):
        if op not in OPS:
            raise HwnasError(f"genotype {cell} cell: unknown operation {op!r} (known: {', '.join(PRIMITIVES)})")
        node = k // 2 + 2  # the state this edge feeds
        if not 0 <= j < node:
            raise HwnasError(f"genotype {cell} cell: edge {k} ({op}, {j}) reads state {j}, but node {node} "
                             f"can only read states 0..{node - 1}")
    n_states = len(edges) // 2 + 2
    if not concat or any(not 0 <= i < n_states for i in concat):
        raise HwnasError(f"genotype {cell}_concat {list(concat)} must name states in 0..{n_states - 1}")


def load_genotype(spec: str | Path) -> Genotype:
    """A genotype from a DARTS string, a published name (DARTS_V1, DARTS_V2), a genotype JSON file, or a run
    directory holding genotype.json."""
    text = str(spec).strip()
    if text in PUBLISHED:
        return PUBLISHED[text]
    if text.startswith("Genotype("):
        return Genotype.parse(text)
    path = Path(text)
    if path.is_dir():
        path = path / "genotype.json"
    if not path.is_file():
        raise HwnasError(f"--genotype {text!r} is neither a Genotype(...) string, {' nor '.join(PUBLISHED)}, nor a "
                         f"JSON file or run directory")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        content = path.read_text().strip()
        if content.startswith("Genotype("):
            return Genotype.parse(content)
        raise HwnasError(f"{path} is not valid JSON nor a Genotype(...) string") from None
    return Genotype.from_dict(data.get("genotype", data) if isinstance(data, dict) else data)


def derive_genotype(w_normal: torch.Tensor, w_reduce: torch.Tensor, steps: int = 4,
                    multiplier: int = 4) -> Genotype:
    """The DARTS rule on *relaxed* weights (k_edges × n_ops): per node keep the two incoming
    edges with the strongest non-`none` op, and on each the strongest non-`none` op."""
    none = PRIMITIVES.index("none")

    def parse(w: torch.Tensor) -> tuple[Edge, ...]:
        w = w.detach().float().cpu().clone()
        w[:, none] = float("-inf")  # `none` is never chosen, as in the reference
        gene: list[Edge] = []
        start = 0
        for i in range(steps):
            n_in = i + 2
            block = w[start:start + n_in]
            best_val, best_op = block.max(dim=1)
            # Stable ordering: strongest first, ties to the lower input index, as sorted() does.
            order = sorted(range(n_in), key=lambda j: -best_val[j].item())[:2]
            gene.extend((PRIMITIVES[int(best_op[j])], j) for j in order)
            start += n_in
        return tuple(gene)

    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(parse(w_normal), concat, parse(w_reduce), concat)


def edge_ops(g: Genotype) -> tuple[list[int], list[int]]:
    """The genotype as a sub-network of the supernet: the op index on every supernet edge
    (normal, reduce), `none` on the edges the genotype does not use."""
    none = PRIMITIVES.index("none")
    out = []
    for edges in (g.normal, g.reduce):
        ops = [none] * num_edges(g.steps)
        for k, (op, j) in enumerate(edges):
            e = num_edges(k // 2) + j  # node k//2's edges start after those of the earlier nodes
            if ops[e] != none:
                raise HwnasError(f"genotype uses edge {j}→{k // 2 + 2} twice; it is not a sub-network of the supernet")
            ops[e] = PRIMITIVES.index(op)
        out.append(ops)
    return out[0], out[1]


def num_edges(steps: int = 4) -> int:
    """Edges in a search cell: node i (0-based) has i + 2 inputs."""
    return sum(i + 2 for i in range(steps))


# Published genotypes, as printed by the DARTS reference code (used by tests and examples).
DARTS_V1 = Genotype.parse(
    "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), "
    "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])"
)
DARTS_V2 = Genotype.parse(
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2}  # names --genotype accepts

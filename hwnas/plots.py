"""Matplotlib figures. The Agg backend is chosen here, so plotting never needs a display."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from hwnas.spaces.ops import PRIMITIVES  # noqa: E402

_OP_COLOURS = dict(zip(PRIMITIVES, plt.get_cmap("tab10").colors))
_OP_MARKERS = ("x", "o", "s", "^", "v", "D", "P", "*")  # with the colours, ops stay apart in grey print too


def _save(fig, path: Path, rect=None, dpi: int = 120, tight: bool = True) -> Path:
    """Lay out (`tight_layout`, unless the figure is laid out already), write and close a figure; returns its path."""
    if tight:
        fig.tight_layout(**({} if rect is None else {"rect": rect}))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _edge_grid(n_edges: int) -> list[tuple[int, int]]:
    """(node, input) of each edge, in α row order: node i has inputs 0..i+1."""
    cells, i = [], 0
    while len(cells) < n_edges:
        cells.extend((i, j) for j in range(i + 2))
        i += 1
    return cells[:n_edges]


def plot_alpha_history(history: list[dict[str, torch.Tensor]], path: str | Path, title: str = "") -> Path:
    """Op weights on every edge over the epochs (`alpha_figure`), written to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # laid out by alpha_figure: tight_layout over its 28 panels took ~0.9 s a search
    return _save(alpha_figure(history, title), path, dpi=110, tight=False)


def alpha_figure(history: list[dict[str, torch.Tensor]], title: str = ""):
    """One small panel per edge, laid out as the cell's (node × input) grid, normal cell on the left,
    reduction cell on the right, so a reader can judge how far the weights moved: a marker per epoch
    (one epoch is still a visible point), one colour and marker per op, the strongest non-`none` op of
    the last epoch drawn thick, the starting value (uniform 1/|O| for softmax and Gumbel, σ(0) = 0.5 for
    sigmoid) as a dashed line, a y-axis from 0 that always includes it (weights that barely moved look
    flat, not magnified), and whole-number epochs."""
    from matplotlib.ticker import MaxNLocator

    n_edges = history[0]["normal"].shape[0]
    grid = _edge_grid(n_edges)
    n_nodes, n_inputs = grid[-1][0] + 1, grid[-1][0] + 2
    cols = 2 * n_inputs + 1
    width, height = 2.0 * cols, 1.7 * n_nodes + 1.2
    fig = plt.figure(figsize=(width, height))
    # a fixed layout in inches (tick labels left, titles above each panel, the suptitle on top, the epoch label
    # and the legend below): only the cell's panels are made, not the grid's empty corners
    grid_spec = fig.add_gridspec(n_nodes, cols, left=0.35 / width, right=1 - 0.1 / width, top=1 - 0.55 / height,
                                 bottom=0.85 / height, wspace=0.12, hspace=0.45)
    shared = None   # the first panel (normal cell, 0→2): every other panel shares its axes
    epochs = list(range(1, len(history) + 1))
    first = history[0]["normal"].float()
    softmax_like = bool(torch.allclose(first.sum(-1), torch.ones(first.shape[0]), atol=1e-3))
    start = 1.0 / first.shape[-1] if softmax_like else 0.5
    top = max(2 * start, max(float(h[c].max()) for h in history for c in ("normal", "reduce")))
    for c, cell in enumerate(("normal", "reduce")):
        w = torch.stack([h[cell] for h in history]).float()  # (epochs, edges, ops)
        for e, (node, j) in enumerate(grid):
            ax = fig.add_subplot(grid_spec[node, j + c * (n_inputs + 1)], sharex=shared, sharey=shared)
            shared = shared or ax
            if j > 0:
                ax.tick_params(labelleft=False)
            if node < n_nodes - 1:
                ax.tick_params(labelbottom=False)
            ax.axhline(start, color="0.55", ls="--", lw=0.8, label="start (uniform 1/|O|)" if softmax_like
                       else "start (σ(0))")
            best = int(w[-1, e, 1:].argmax()) + 1
            for k, op in enumerate(PRIMITIVES):
                ax.plot(epochs, w[:, e, k], color=_OP_COLOURS[op], marker=_OP_MARKERS[k % len(_OP_MARKERS)],
                        ms=3.5 if k == best else 2.5, lw=2.2 if k == best else 0.9,
                        ls=":" if op == "none" else "-", label=op)
            ax.set_title(f"{cell}: {j}→{node + 2}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6, min_n_ticks=1))
    ax = shared
    ax.set_ylim(0, 1.08 * top)
    ax.set_xlim(0.5, len(history) + 0.5)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"Architecture weights per edge over epochs{' (' + title + ')' if title else ''}", fontsize=10,
                 y=1 - 0.12 / height)
    fig.supxlabel("epoch", fontsize=8, y=0.45 / height)
    return fig


def plot_cell(ax, edges, concat, title: str = "") -> None:
    """A DARTS cell as a small graph: inputs on the left, nodes to the right, edges coloured by op."""
    steps = len(edges) // 2
    pos = {0: (0.0, 0.75), 1: (0.0, 0.25)}
    for i in range(steps):
        pos[i + 2] = (0.3 + 0.5 * i / max(steps - 1, 1), 0.9 - 0.8 * i / max(steps - 1, 1))
    out = (1.05, 0.5)
    for k, (op, j) in enumerate(edges):
        a, b = pos[j], pos[k // 2 + 2]
        ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="-|>", color=_OP_COLOURS[op], lw=1.8,
                                                         shrinkA=9, shrinkB=9, connectionstyle="arc3,rad=0.12"))
    for i in concat:
        ax.annotate("", xy=out, xytext=pos[i], arrowprops=dict(arrowstyle="-|>", color="0.75", lw=0.8,
                                                               shrinkA=9, shrinkB=9))
    labels = {0: "c[k-2]", 1: "c[k-1]", **{i + 2: str(i) for i in range(steps)}}
    for n, (x, y) in pos.items():
        ax.text(x, y, labels[n], ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round", fc="#dde8f6" if n < 2 else "white", ec="0.4"))
    ax.text(*out, "c[k]", ha="center", va="center", fontsize=7, bbox=dict(boxstyle="round", fc="#f6e7c8", ec="0.4"))
    ax.set_xlim(-0.12, 1.15)
    ax.set_ylim(0.0, 1.0)
    ax.axis("off")
    ax.set_title(title, fontsize=8)


def _cost_label(col: str) -> str:
    if col.startswith("predicted_latency_ms["):
        return f"predicted latency (ms), {col[len('predicted_latency_ms['):-1]}"
    return col


def plot_pareto(frame, cost_col: str, out_dir: str | Path, n_cells: int = 3) -> list[Path]:
    """Accuracy vs λ, accuracy vs cost with the Pareto front, and the cells of a few points."""
    from hwnas.spaces.genotype import Genotype

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    steps = int(frame["finetune_steps"].iloc[0]) if "finetune_steps" in frame else 0
    ax.plot(frame["lambda"], 100 * frame["val_acc"], "o-", color="#1f77b4",
            label=f"derived network (inherited weights{f', {steps} fine-tune steps' if steps else ''}, BN recalibrated)")
    if "relaxed_val_acc" in frame:
        ax.plot(frame["lambda"], 100 * frame["relaxed_val_acc"], "^:", color="#1f77b4", ms=4, alpha=0.6,
                label="relaxed α(λ), batch-statistics BN")
    ax2 = ax.twinx()
    ax2.plot(frame["lambda"], frame[cost_col], "s--", color="#d62728", ms=4, label=_cost_label(cost_col))
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], fontsize=7, loc="lower left")
    ax.set_xlabel("λ (trade-off; 0 = most accurate)")
    ax.set_ylabel("validation accuracy (%)", color="#1f77b4")
    ax2.set_ylabel(_cost_label(cost_col), color="#d62728", fontsize=8)
    ax2.set_ylim(0, 1.08 * float(frame[cost_col].max()))  # from 0: the fall is shown at its true size
    ax.grid(alpha=0.3)
    ax.set_title("One search, every trade-off: accuracy and cost along λ", fontsize=9)
    paths.append(_save(fig, out_dir / "pareto_lambda.png"))

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    front = frame[frame["pareto_optimal"]].sort_values(cost_col)
    sc = ax.scatter(frame[cost_col], 100 * frame["val_acc"], c=frame["lambda"], cmap="viridis", s=30, zorder=3)
    ax.step(front[cost_col], 100 * front["val_acc"], where="post", color="#d62728", lw=1.5, label="Pareto front")
    ax.scatter(front[cost_col], 100 * front["val_acc"], facecolors="none", edgecolors="#d62728", s=90, zorder=4)
    fig.colorbar(sc, ax=ax, label="λ")
    ax.set_xlabel(_cost_label(cost_col), fontsize=8)
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy vs cost of the architectures along λ", fontsize=9)
    paths.append(_save(fig, out_dir / "pareto_front.png"))

    picks = sorted({0, len(frame) // 2, len(frame) - 1})[:n_cells]
    fig, axes = plt.subplots(len(picks), 2, figsize=(7, 2.4 * len(picks)), squeeze=False)
    for r, i in enumerate(picks):
        g = Genotype.parse(frame["genotype"].iloc[i])
        tag = f"λ={frame['lambda'].iloc[i]:.3g}, acc {100 * frame['val_acc'].iloc[i]:.1f}%"
        plot_cell(axes[r, 0], g.normal, g.normal_concat, f"normal cell ({tag})")
        plot_cell(axes[r, 1], g.reduce, g.reduce_concat, f"reduction cell ({tag})")
    handles = [plt.Line2D([], [], color=_OP_COLOURS[op], lw=2, label=op) for op in PRIMITIVES if op != "none"]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    paths.append(_save(fig, out_dir / "pareto_cells.png", rect=(0, 0.06, 1, 1)))
    return paths


def plot_lambda_range(rec: dict, frame, path: str | Path) -> Path:
    """Accuracy vs λ for ResNet18 pruning: the hypernet's gates along [0, Λ] and the fixed-λ fits, with
    Λ from Theorem 1 (or its fallback) and the empirical plateau end and Λ marked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(frame["lambda"], 100 * frame["val_acc"], "o-", color="#1f77b4", label="λ-hypernet (one fit)")
    emp = rec.get("empirical")
    if emp:
        fits = emp["fits"]
        ax.plot([f["lambda"] for f in fits], [100 * f["val_acc"] for f in fits], "s--", color="#ff7f0e",
                label="fixed-λ fits")
        ax.axhline(100 * emp["chance_acc"], color="0.5", ls=":", lw=1, label="chance")
        ax.axhline(100 * emp["pretrained_acc"], color="0.3", ls="-.", lw=1, label="pretrained")
        if emp["plateau_end"] is not None:
            ax.axvline(emp["plateau_end"], color="#2ca02c", ls=":", label=f"plateau end {emp['plateau_end']:.3g}")
        if emp["lambda_max"] is not None:
            ax.axvline(emp["lambda_max"], color="#2ca02c", ls="--", label=f"empirical Λ {emp['lambda_max']:.3g}")
    if rec.get("theorem_lambda_max", 0) > 0:
        ax.axvline(rec["theorem_lambda_max"], color="#d62728", label=f"Theorem 1 Λ {rec['theorem_lambda_max']:.3g}")
    else:   # no positive Λ from the theorem: mark its fallback L̄/Tᵀ1 (the bound with S = 0)
        fallback = rec["label_entropy"] / rec["cost_bound"][0]
        ax.axvline(fallback, color="#d62728", ls=":", label=f"Theorem 1 fallback L̄/Tᵀ1 {fallback:.3g}")
    used = rec["lambda_max"][0]
    ax.axvline(used, color="#d62728", ls="--", lw=1, label=f"Λ used {used:.3g}")
    positive = [v for v in frame["lambda"] if v > 0] + ([f["lambda"] for f in emp["fits"]] if emp else [])
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
    ax.set_xlim(left=0)
    ax.set_xlabel("λ (per ms of predicted latency)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Useful range of λ: Theorem 1 vs the accuracy plateau", fontsize=9)
    _save(fig, path)
    return path


def plot_prune_pareto(frame, out_dir: str | Path) -> list[Path]:
    """Accuracy vs predicted latency of the pruned ResNet18s along λ, and the kept width per block along λ."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    sc = ax.scatter(frame["predicted_latency_ms"], 100 * frame["val_acc"], c=frame["lambda"], cmap="viridis", s=30,
                    zorder=3)
    front = frame[frame["pareto_optimal"]].sort_values("predicted_latency_ms")
    ax.step(front["predicted_latency_ms"], 100 * front["val_acc"], where="post", color="#d62728", lw=1.5,
            label="Pareto front")
    fig.colorbar(sc, ax=ax, label="λ")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Pruned ResNet18 along λ (one fit)", fontsize=9)
    paths = [_save(fig, out_dir / "pareto_front.png")]

    cols = [c for c in frame.columns if c.startswith("frac[")]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    im = ax.imshow(frame[cols].to_numpy().T, aspect="auto", cmap="Blues", vmin=0, vmax=1)
    ax.set_yticks(range(len(cols)), [c[5:-1] for c in cols], fontsize=7)
    ax.set_xticks(range(len(frame)), [f"{v:.2g}" for v in frame["lambda"]], fontsize=6, rotation=45)
    ax.set_xlabel("λ")
    fig.colorbar(im, ax=ax, label="kept inner width")
    ax.set_title("Branch width per block along λ", fontsize=9)
    paths.append(_save(fig, out_dir / "pareto_gates.png"))
    return paths


def plot_lambda_sweep(rows: list[dict], bound: float, theorem: float, chance: float, path: str | Path) -> Path:
    """Fixed-λ searches against Theorem 1: accuracy (relaxed, and the argmax network with `none`
    allowed) vs λ, broken networks marked, Λ (theorem) and the bound L̄/Tᵀ1 as vertical lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = [max(r["lambda"], bound * 1e-2) for r in rows]  # λ = 0 drawn at the left edge of the log axis
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(x, [100 * r["relaxed_val_acc"] for r in rows], "^:", color="#1f77b4", label="relaxed α")
    ax.plot(x, [100 * r["argmax_val_acc"] for r in rows], "o-", color="#2ca02c", label="argmax network (none allowed)")
    broken = [(xi, 100 * r["argmax_val_acc"]) for xi, r in zip(x, rows) if not r["argmax_valid"]]
    if broken:
        ax.scatter(*zip(*broken), marker="x", s=80, color="#d62728", zorder=4, label="broken (invalid)")
    ax.axhline(100 * chance, color="grey", lw=0.8, ls="--", label="chance")
    ax.axvline(bound, color="#d62728", lw=1, ls="--", label="L̄/Tᵀ1 (Theorem 1, S = 0)")
    if theorem > 0:
        ax.axvline(theorem, color="#9467bd", lw=1.2, label="Λ = (L̄ − S)/Tᵀ1")
    ax.set_xscale("log")
    ax.set_xlabel("λ (fixed, per search; λ = 0 at the left edge)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Where fixed-λ searches break, against Theorem 1's Λ", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    _save(fig, path)
    return path

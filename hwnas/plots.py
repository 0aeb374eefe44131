"""Matplotlib figures. The Agg backend is chosen here, so plotting never needs a display."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from hwnas.spaces.ops import PRIMITIVES  # noqa: E402

_OP_COLOURS = dict(zip(PRIMITIVES, plt.get_cmap("tab10").colors))


def _edge_grid(n_edges: int) -> list[tuple[int, int]]:
    """(node, input) of each edge, in α row order: node i has inputs 0..i+1."""
    cells, i = [], 0
    while len(cells) < n_edges:
        cells.extend((i, j) for j in range(i + 2))
        i += 1
    return cells[:n_edges]


def plot_alpha_history(history: list[dict[str, torch.Tensor]], path: str | Path, title: str = "") -> Path:
    """Op weights on every edge over the epochs: one small panel per edge, laid out as the cell's
    (node × input) grid, normal cell on the left, reduction cell on the right. The strongest
    non-`none` op of the last epoch is drawn thick."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_edges = history[0]["normal"].shape[0]
    grid = _edge_grid(n_edges)
    n_nodes, n_inputs = grid[-1][0] + 1, grid[-1][0] + 2
    fig, axes = plt.subplots(n_nodes, 2 * n_inputs + 1, figsize=(2.0 * (2 * n_inputs + 1), 1.7 * n_nodes),
                             sharex=True, sharey=True, squeeze=False)
    epochs = range(1, len(history) + 1)
    for ax in axes.flat:
        ax.set_visible(False)
    for c, cell in enumerate(("normal", "reduce")):
        w = torch.stack([h[cell] for h in history]).float()  # (epochs, edges, ops)
        for e, (node, j) in enumerate(grid):
            ax = axes[node, j + c * (n_inputs + 1)]
            ax.set_visible(True)
            best = int(w[-1, e, 1:].argmax()) + 1
            for k, op in enumerate(PRIMITIVES):
                ax.plot(epochs, w[:, e, k], color=_OP_COLOURS[op], lw=2.5 if k == best else 0.9,
                        ls=":" if op == "none" else "-", label=op)
            ax.set_title(f"{cell}: {j}→{node + 2}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(PRIMITIVES), fontsize=8, frameon=False)
    fig.suptitle(f"Architecture weights per edge over epochs{' (' + title + ')' if title else ''}", fontsize=10)
    fig.supxlabel("epoch", fontsize=8, y=0.06)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

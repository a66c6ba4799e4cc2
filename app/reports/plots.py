"""The per-slice probability plot of a case, drawn by matplotlib (Agg, no display) as PNG bytes."""

from __future__ import annotations

import io


def slice_plot_png(slices: list[dict], threshold: float, key_indices: list[int] | None = None,
                   size_in: tuple[float, float] = (6.5, 2.2), dpi: int = 150) -> bytes | None:
    """P(COVID-19) of every classified slice against its z (mm, LPS), the operating threshold as a dashed
    line and the key levels marked; None when no slice was classified (a volume model)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(s["z_mm"], s["probability"]) for s in slices if s.get("probability") is not None]
    if not points:
        return None
    z, p = zip(*sorted(points))
    fig = Figure(figsize=size_in, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(z, p, color="#c0392b", linewidth=1.2, marker=".", markersize=3)
    ax.axhline(threshold, color="#555555", linestyle="--", linewidth=0.8, label=f"threshold {threshold:.2f}")
    z_of = {s["index"]: s["z_mm"] for s in slices}
    for k in key_indices or []:
        if k in z_of:
            ax.axvline(z_of[k], color="#d4ac0d", linewidth=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("slice position z (mm, inferior to superior)")
    ax.set_ylabel("P(COVID-19)")
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

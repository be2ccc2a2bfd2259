"""The timeline picture of a run: heartbeats per DIME, the kill, detection, repair, and the sink's throughput.

Drawn with matplotlib (imported only here, only when asked; ``pip install matplotlib``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pxproto.orch.events import (
    DimeDead,
    DimeReborn,
    DimeSuspected,
    OrchEvent,
    RepairDone,
    ServiceDeployed,
    StageScaled,
    key_text,
)


def draw(path: Path, t0: float, heartbeats: Sequence[tuple[float, bytes, int, int, int]], events: Sequence[OrchEvent],
         sink: Sequence[tuple[int, float, bytes]], kill_t: float | None, bin_s: float = 0.1,
         items_per_s: float | None = None) -> Path:  # fmt: skip
    """Write the PNG; times are seconds since ``t0`` (the caller's monotonic clock)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_hb, ax_tp) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, height_ratios=(3, 1.2))
    keys = sorted({(mac, dime) for _, mac, dime, _, _ in heartbeats})
    row = {k: i for i, k in enumerate(keys)}
    epochs = sorted({e for *_, e, _ in heartbeats})
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
    for n, epoch in enumerate(epochs):
        xs = [t - t0 for t, mac, d, e, _ in heartbeats if e == epoch]
        ys = [row[(mac, d)] for t, mac, d, e, _ in heartbeats if e == epoch]
        ax_hb.scatter(xs, ys, s=4, marker="|", color=palette[n % len(palette)], label=f"heartbeat, epoch {epoch}")
    ax_hb.set_yticks(range(len(keys)), [key_text(k) for k in keys], fontsize=7)
    ax_hb.set_ylabel("DIME (server MAC / id)")
    marks: list[tuple[float, str, str]] = []
    if kill_t is not None:
        marks.append((kill_t - t0, "kill", "red"))
    style = {
        DimeSuspected: ("suspected", "orange"),
        DimeDead: ("detected dead", "darkred"),
        RepairDone: ("repaired", "green"),
        DimeReborn: ("reborn", "purple"),
        StageScaled: ("scaled", "blue"),
        ServiceDeployed: ("deployed", "black"),
    }
    for ev in events:
        for kind, (label, color) in style.items():
            if isinstance(ev, kind):
                marks.append((ev.t - t0, label, color))
    seen: set[str] = set()
    for x, label, color in marks:
        for ax in (ax_hb, ax_tp):
            ax.axvline(x, color=color, linewidth=1, linestyle="--", label=label if ax is ax_hb and label not in seen
                       else None)  # fmt: skip
        seen.add(label)
    ax_hb.legend(loc="upper left", fontsize=7, ncols=4, markerscale=3)
    ax_hb.set_title("pxorch demo: heartbeats, the kill, detection, repair")
    if sink:
        times = sorted(t - t0 for _, t, _ in sink)
        start = times[0]
        nbins = int((times[-1] - start) / bin_s) + 1
        counts = [0] * nbins
        for t in times:
            counts[int((t - start) / bin_s)] += 1
        ax_tp.step([start + i * bin_s for i in range(nbins)], [c / bin_s for c in counts], where="post")
    ax_tp.set_ylabel("sink items/s")
    if items_per_s:
        ax_tp.set_title(f"sink: {items_per_s:,.0f} items/s, first to last record", fontsize=9)
    ax_tp.set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

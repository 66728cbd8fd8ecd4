"""PNG charts (optional: needs matplotlib, installed by the ``bench`` extra)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .report import BenchResult

MISSING_NOTE = (
    "chart skipped: matplotlib is not installed "
    "(pip install 'fasterapi-asgi[bench]' or pip install matplotlib)"
)


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_chart(result: BenchResult, path: Path) -> str | None:
    """Bar chart of median requests/s per server, labelled with the ratio to the reference.

    Returns ``None`` on success, or a note explaining why no chart was written.
    """
    plt = _pyplot()
    if plt is None:
        return MISSING_NOTE
    summaries = result.summaries()
    if not summaries:
        return "chart skipped: no results"
    names = [s.server for s in summaries]
    values = [s.rps for s in summaries]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 2), 3.6), dpi=110)
    colors = ["#d9480f" if n == "fasterapi-asgi" else "#5c7cfa" for n in names]
    bars = ax.bar(names, values, color=colors)
    for bar, s in zip(bars, summaries, strict=True):
        label = f"{s.rps:,.0f}" + (f"\n{s.ratio:.2f}x" if s.ratio is not None else "")
        ax.annotate(
            label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8
        )
    c = result.config
    ax.set_title(f"{c.get('method', 'GET')} {c.get('path', '/')}  ({c.get('app', '')})", fontsize=10)
    ax.set_ylabel("requests/s (median)")
    ax.set_ylim(0, max(values) * 1.25 if max(values) > 0 else 1)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def write_suite_chart(
    ratios: Mapping[str, Mapping[str, float]], path: Path, *, title: str, servers: Sequence[str]
) -> str | None:
    """Grouped bars: for each scenario, each server's ratio to that scenario's reference server.

    ``ratios[scenario][server] = ratio``. Returns ``None`` on success or a note.
    """
    plt = _pyplot()
    if plt is None:
        return MISSING_NOTE
    scenarios = [s for s in ratios if ratios[s]]
    if not scenarios:
        return "chart skipped: no results"
    present = [s for s in servers if any(s in ratios[sc] for sc in scenarios)]
    width = 0.8 / max(1, len(present))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(scenarios) + 2), 4.2), dpi=110)
    for i, server in enumerate(present):
        xs = [j + (i - (len(present) - 1) / 2) * width for j in range(len(scenarios))]
        ys = [ratios[sc].get(server, 0.0) for sc in scenarios]
        ax.bar(xs, ys, width=width, label=server, color="#d9480f" if server == "fasterapi-asgi" else None)
    ax.axhline(1.0, color="#868e96", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("ratio to the scenario's reference")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=min(3, len(present)))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None

"""PNG plots of a report: decode speed against engine size, quality against decode speed.

matplotlib is imported only when a plot is drawn (it comes with ``edgepack[report]``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgepack.errors import ToolMissingError
from edgepack.report.cells import Measure
from edgepack.report.compose import PlotPoint, Report
from edgepack.report.entries import verdict_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SPEED_PLOT = "tokens_vs_size.png"
QUALITY_PLOT = "quality_vs_speed.png"
PLOT_TITLES = {
    SPEED_PLOT: "Decode tokens/s vs engine size",
    QUALITY_PLOT: "Quality vs decode speed",
}
VERDICT_COLOURS = {None: "#8a8a8a", False: "#b00020", True: "#17692d"}


def render_plots(report: Report) -> dict[str, bytes]:
    """PNG bytes by file name; a plot is left out when no column has data for it."""
    plots = {}
    sized = [p for p in report.points if p.engine_bytes and p.decode]
    if sized:
        plots[SPEED_PLOT] = _speed_plot(sized, report.batch)
    rated = [p for p in report.points if p.quality is not None and p.decode]
    if rated and report.quality_metric:
        plots[QUALITY_PLOT] = _quality_plot(rated, report.quality_metric)
    return plots


def _axes(title: str, x_label: str, y_label: str) -> tuple[Figure, Axes]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ToolMissingError(
            "plots need matplotlib, which is not installed", hint="pip install 'edgepack[report]'"
        ) from exc
    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _error_bars(measures: Sequence[Measure]) -> list[list[float]]:
    below = [m.value - m.low if m.low is not None else 0.0 for m in measures]
    above = [m.high - m.value if m.high is not None else 0.0 for m in measures]
    return [below, above]


def _label_points(
    axes: Axes, points: Sequence[PlotPoint], xs: Sequence[float], ys: Sequence[float]
) -> None:
    for point, x, y in zip(points, xs, ys, strict=True):
        axes.annotate(point.label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)


def _speed_plot(points: Sequence[PlotPoint], batch: str) -> bytes:
    figure, axes = _axes(PLOT_TITLES[SPEED_PLOT], "engine size (MB)", "decode tokens/s")
    xs = [(p.engine_bytes or 0.0) / 1e6 for p in points]
    for name, series in (
        ("batch 1", [p.decode for p in points]),
        (batch, [p.batched for p in points]),
    ):
        shown = [(x, m) for x, m in zip(xs, series, strict=True) if m is not None]
        if shown:
            measures = [m for _, m in shown]
            axes.errorbar(
                [x for x, _ in shown],
                [m.value for m in measures],
                yerr=_error_bars(measures),
                fmt="o" if name == "batch 1" else "s",
                capsize=4,
                label=f"decode, {name} (median, min–max)",
            )
    _label_points(axes, points, xs, [p.decode.value if p.decode else 0.0 for p in points])
    axes.set_xlim(left=0, right=max(xs) * 1.25)
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8, loc="best")
    return _png(figure)


def _quality_plot(points: Sequence[PlotPoint], metric: str) -> bytes:
    figure, axes = _axes(PLOT_TITLES[QUALITY_PLOT], "decode tokens/s, batch 1", metric)
    xs = [p.decode.value if p.decode else 0.0 for p in points]
    ys = [p.quality or 0.0 for p in points]
    for passed, colour in VERDICT_COLOURS.items():
        group = [i for i, p in enumerate(points) if p.passed is passed]
        if group:
            axes.scatter(
                [xs[i] for i in group],
                [ys[i] for i in group],
                c=colour,
                s=60,
                zorder=3,
                label=f"verdict: {verdict_name(passed)}",
            )
    _label_points(axes, points, xs, ys)
    axes.legend(fontsize=8, loc="best")
    axes.set_xlim(left=0, right=max(xs) * 1.25)
    return _png(figure)

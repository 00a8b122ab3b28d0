"""The diagnostics' figures, drawn by matplotlib (the optional extra ``toco_fast[plots]``; without it every
function here raises ``MissingExtraError`` saying how to install it). Figures are drawn off-screen (Agg, no pyplot
state) and written all or nothing."""
import io
from typing import Dict, Sequence

from toco_fast._extras import require
from toco_fast.diagnose.panels import Panel
from toco_fast.io.atomic import atomic_write

__all__ = ["require_matplotlib", "save_panels_png", "save_curves_png"]


def require_matplotlib():
    """The ``matplotlib.figure`` module, or ``MissingExtraError`` (``pip install 'toco_fast[plots]'``)."""
    require("matplotlib", "plots", "drawing the diagnostic pictures")
    return require("matplotlib.figure", "plots", "drawing the diagnostic pictures", package="matplotlib")


def _save(figure, path: str, dpi: int) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()), durable=False)
    return path


def save_panels_png(path: str, panels: Sequence[Panel], title: str = "", columns: int = 4, dpi: int = 100) -> str:
    """One image's panels (``toco_fast.diagnose.panels``) as a titled grid PNG, ``columns`` per row."""
    figure_module = require_matplotlib()
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    height, width = panels[0].picture.shape[:2]
    cell = 2.6
    figure = figure_module.Figure(figsize=(cell * columns, cell * rows * height / width + (0.4 if title else 0)))
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(panel.picture, interpolation="nearest")
        axes.set_title(panel.title, fontsize=9)
        axes.axis("off")
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path, dpi)


def save_curves_png(path: str, curves: Dict[str, Sequence[float]], dpi: int = 120) -> str:
    """The over-smoothing curves (label -> mean |cos| per block) on one plot, blocks numbered from 1."""
    figure_module = require_matplotlib()
    figure = figure_module.Figure(figsize=(5.5, 3.8))
    axes = figure.add_subplot(1, 1, 1)
    for label, values in curves.items():
        axes.plot(range(1, len(values) + 1), values, marker="o", label=label)
    axes.set_xlabel("transformer block")
    axes.set_ylabel("mean |cos| between patch tokens")
    axes.set_title("Over-smoothing (ToCo Fig. 2)")
    axes.set_ylim(0.0, 1.0)
    axes.set_xticks(range(1, max(len(v) for v in curves.values()) + 1))
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path, dpi)

"""Figures for papers and slides without a browser: the model's landscape, density, film strip or
Langevin sampler on your points (a regression model: its landscape, density or thinking), drawn
with matplotlib to PNG, SVG, PDF, an animated GIF, or an MP4 video (H.264 through the ffmpeg that
the optional `imageio-ffmpeg` package ships: `pip install "iclebm[video]"`; or an ffmpeg on PATH).

The numbers come from the same probes the app draws (`iclebm.probes.landscape`,
`iclebm.probes.regression_view`); this module only lays them out. With an `AffineMap` (data
rescaled into the box) the tick labels show the data's own units. Figures are built with
matplotlib's object API (no pyplot), so importing this in a notebook leaves its backend alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.animation import FFMpegWriter, FuncAnimation, MovieWriter, PillowWriter
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from iclebm.card import box_of, is_regression
from iclebm.data.rescale import AffineMap
from iclebm.dynamics.langevin import SamplerConfig
from iclebm.dynamics.thinking import ThinkingConfig
from iclebm.errors import CapabilityError
from iclebm.probes import landscape as L
from iclebm.probes.regression_view import regression_grid, thinking_curves

WHATS = ("landscape", "density", "filmstrip", "langevin", "thinking")
FORMATS = (".png", ".svg", ".pdf", ".gif", ".mp4")
ANIMATED = (".gif", ".mp4")
GIF_WHATS = ("filmstrip", "langevin", "thinking")  # the views with frames
REGRESSION_WHATS = ("landscape", "density", "thinking")
LANGEVIN_PARTICLES = 300
LANGEVIN_FRAMES = 40
GIF_FPS = 8
DPI = 150


def check_render_request(model: object, what: str, out: Path) -> None:
    """Refuse (ValueError / CapabilityError) before any work what cannot be drawn or written."""
    if what not in WHATS:
        raise ValueError(f"unknown view {what!r}; choose from {', '.join(WHATS)}")
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"{out.name}: the format is chosen by the suffix, one of {', '.join(FORMATS)}")
    if out.suffix.lower() in ANIMATED and what not in GIF_WHATS:
        raise ValueError(f"an animation ({', '.join(ANIMATED)}) needs frames: use --what "
                         f"{' or '.join(GIF_WHATS)} (or a still format)")
    if out.suffix.lower() == ".mp4":
        ffmpeg_path()  # refuse before any work when no encoder is here
    if _regression(model) and what not in REGRESSION_WHATS:
        raise CapabilityError(f"--what {what} draws a density model; a regression model renders its "
                              "landscape, density p(y | x, context) or thinking")
    if not _regression(model) and what == "thinking":
        raise CapabilityError("--what thinking draws a regression model's prediction by energy "
                              "minimisation (e.g. --checkpoint checkpoints/linreg.safetensors)")


def ffmpeg_path() -> str:
    """The ffmpeg that encodes MP4: imageio-ffmpeg's own binary (no system install needed), else one on
    PATH; CapabilityError naming the fix when neither is here."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found:
            return found
    raise CapabilityError('MP4 needs an ffmpeg: pip install "iclebm[video]" (imageio-ffmpeg ships one), '
                          "put ffmpeg on PATH, or write a .gif")


def _writer(suffix: str) -> MovieWriter:
    if suffix == ".mp4":
        # yuv420p: the pixel format every browser and slide program plays; even frame sizes for it.
        return FFMpegWriter(fps=GIF_FPS, codec="libx264",
                            extra_args=["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p"])
    return PillowWriter(fps=GIF_FPS)


def _regression(model: object) -> bool:
    return is_regression((getattr(model, "card", None) or {}).get("task"))


def _axes(ax: Axes, box: tuple[float, float], mapping: AffineMap | None, labels: tuple[str, str]) -> None:
    ax.set_xlim(*box)
    ax.set_ylim(*box)
    ax.set_aspect("equal")
    if mapping is not None:  # ticks at round numbers of the data's units; the model saw box coordinates
        for axis, set_ticks in ((0, ax.set_xticks), (1, ax.set_yticks)):
            lo, hi = sorted(mapping.axis_to_data(v, axis) for v in box)
            ticks = [t for t in MaxNLocator(6).tick_values(lo, hi) if lo <= t <= hi]
            scale, offset = mapping.scale[axis], mapping.offset[axis]
            set_ticks([(t - offset) * scale + mapping.centre for t in ticks], [f"{t:g}" for t in ticks])
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])


def _heat(ax: Axes, values: np.ndarray, box: tuple[float, float], cmap: str) -> object:
    return ax.imshow(values, origin="lower", extent=(*box, *box), cmap=cmap, interpolation="bilinear")


def _points(ax: Axes, points: np.ndarray, n_shown: int | None = None) -> None:
    n = len(points) if n_shown is None else n_shown
    if n < len(points):
        ax.scatter(points[n:, 0], points[n:, 1], s=10, c="white", alpha=0.3, linewidths=0)
    if n:
        ax.scatter(points[:n, 0], points[:n, 1], s=14, c="white", edgecolors="black", linewidths=0.5)


def _floored(log_density: np.ndarray, span: float = 25.0) -> np.ndarray:
    """log p floored `span` nats below its peak, so empty space does not stretch the colour scale."""
    return np.maximum(log_density, np.nanmax(log_density) - span)


def _still(model: object, points: np.ndarray, what: str, resolution: int, mapping: AffineMap | None,
           labels: tuple[str, str], title: str, trajectory: L.Trajectory | None = None) -> Figure:
    """One figure: landscape (E), density (log p), film strip (log p after 0, 1, 2, 4, ... points) or
    Langevin (the final particles and their paths over log p)."""
    box = box_of(model)
    if what == "filmstrip":
        strip = L.compute_film_strip(model, points, box, resolution)
        fig = Figure(figsize=(2.2 * len(strip.lengths), 2.6), layout="constrained")
        axs = fig.subplots(1, len(strip.lengths), squeeze=False)
        for ax, n, lp in zip(axs[0], strip.lengths, strip.log_density, strict=True):
            _heat(ax, _floored(lp), box, "magma")
            _points(ax, points, n)
            _axes(ax, box, mapping, labels if ax is axs[0][0] else (labels[0], ""))
            ax.set_title(f"n = {n}", fontsize=9)
        fig.suptitle(title, fontsize=10)
        return fig
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.subplots()
    if _regression(model):
        _, _, energy, log_p = regression_grid(model, points, box, resolution)
        values = energy if what == "landscape" else _floored(log_p)
        bar = "E(y | x, context)" if what == "landscape" else "log p(y | x, context)"
    else:
        land = L.compute_landscape(model, points, box, resolution)
        values = land.energy if what == "landscape" else _floored(land.log_density)
        bar = "E(x | context)" if what == "landscape" else "log p(x | context)"
    im = _heat(ax, values, box, "viridis_r" if what == "landscape" else "magma")
    fig.colorbar(im, ax=ax, label=bar, shrink=0.85)
    if what == "thinking":
        xs, steps, curves = _thinking(model, points, box, resolution)
        for i in np.unique(np.linspace(0, len(steps) - 1, 6).round().astype(int)):
            shade = 0.3 + 0.7 * i / max(len(steps) - 1, 1)
            ax.plot(xs, curves[i], c="yellow", alpha=shade, lw=1.0 + shade, label=f"{steps[i]} steps")
        ax.legend(fontsize=7, loc="upper left", title="ŷ(x) after", title_fontsize=7)
    if what == "langevin":
        traj = trajectory if trajectory is not None else _langevin(model, points, box)
        ax.plot(traj.positions[:, :, 0], traj.positions[:, :, 1], lw=0.3, c="cyan", alpha=0.25)
        ax.scatter(traj.positions[-1, :, 0], traj.positions[-1, :, 1], s=4, c="cyan")
    _points(ax, points)
    _axes(ax, box, mapping, labels)
    ax.set_title(title, fontsize=10)
    return fig


def _thinking(model: object, points: np.ndarray, box: tuple[float, float], resolution: int
              ) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(xs, steps, curves): y_hat(x) after each shown step of the card's thinking (its step count,
    step size and starts), the frames the app's thinking animation shows."""
    thinking = ThinkingConfig.from_dict((getattr(model, "card", None) or {}).get("thinking"))
    xs = regression_grid(model, points, box, resolution)[0]
    steps, curves = thinking_curves(model, points, xs, thinking.steps)
    return xs, steps, curves


def _langevin(model: object, points: np.ndarray, box: tuple[float, float]) -> L.Trajectory:
    """The card's sampler from a uniform start (the app's defaults), thinned to LANGEVIN_FRAMES frames."""
    s = SamplerConfig.from_dict((getattr(model, "card", None) or {}).get("sampler") or {})
    return L.langevin_animation(model, points, box, n_particles=LANGEVIN_PARTICLES, steps=s.steps,
                                step_size=s.step_size, noise_std=s.noise_std, grad_clip=s.grad_clip,
                                init="uniform", seed=0, max_frames=LANGEVIN_FRAMES)


def _animation(model: object, points: np.ndarray, what: str, resolution: int, mapping: AffineMap | None,
               labels: tuple[str, str], title: str, trajectory: L.Trajectory | None = None
               ) -> tuple[Figure, FuncAnimation]:
    """The frames of a GIF: the film strip one prefix per frame, the Langevin particles per step, or
    a regression model's y_hat(x) per thinking step."""
    box = box_of(model)
    fig = Figure(figsize=(5.0, 4.6), layout="constrained")
    ax = fig.subplots()
    _axes(ax, box, mapping, labels)
    if what == "filmstrip":
        strip = L.compute_film_strip(model, points, box, resolution)
        floor = np.nanmax(strip.log_density) - 25.0
        im = _heat(ax, np.maximum(strip.log_density[0], floor), box, "magma")
        im.set_clim(floor, float(np.nanmax(strip.log_density)))
        shown = ax.scatter([], [], s=14, c="white", edgecolors="black", linewidths=0.5)

        def draw(i: int) -> None:
            n = strip.lengths[i]
            im.set_data(np.maximum(strip.log_density[i], floor))
            shown.set_offsets(points[:n] if n else np.empty((0, 2)))
            ax.set_title(f"{title}\nlog p(x | first {n} points)", fontsize=9)

        frames = len(strip.lengths)
    elif what == "thinking":
        _, _, _, log_p = regression_grid(model, points, box, resolution)
        _heat(ax, _floored(log_p), box, "magma")
        _points(ax, points)
        xs, steps, curves = _thinking(model, points, box, resolution)
        (line,) = ax.plot(xs, curves[0], c="yellow", lw=1.6)

        def draw(i: int) -> None:
            line.set_ydata(curves[i])
            ax.set_title(f"{title}\nŷ(x) after {steps[i]} thinking steps", fontsize=9)

        frames = len(steps)
    else:
        land = L.compute_landscape(model, points, box, resolution)
        _heat(ax, _floored(land.log_density), box, "magma")
        _points(ax, points)
        traj = trajectory if trajectory is not None else _langevin(model, points, box)
        dots = ax.scatter(traj.positions[0, :, 0], traj.positions[0, :, 1], s=4, c="cyan")

        def draw(i: int) -> None:
            dots.set_offsets(traj.positions[i])
            ax.set_title(f"{title}\nLangevin step {int(traj.steps[i])}", fontsize=9)

        frames = len(traj.steps)
    return fig, FuncAnimation(fig, draw, frames=frames, repeat=False)


def render_figure(model: object, points: np.ndarray | list, out: str | os.PathLike, what: str = "density",
                  resolution: int = 100, mapping: AffineMap | None = None,
                  labels: tuple[str, str] = ("x", "y"), title: str | None = None,
                  trajectory: L.Trajectory | None = None) -> Path:
    """Draw `what` (WHATS) of `model` on the context `points` (box coordinates, at most the model's
    max_context) and write it to `out`; the suffix picks the format (FORMATS; .gif or .mp4 animates the film
    strip or the Langevin sampler: `trajectory`, e.g. the app's last run, or the card's sampler from a
    uniform start). Written to a temporary file and renamed, so a failure leaves no
    partial file. Returns the path written."""
    out = Path(out)
    check_render_request(model, what, out)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    name = (getattr(model, "card", None) or {}).get("name", type(model).__name__)
    title = title if title is not None else f"{name}: {what}, {len(pts)} context points"
    if out.suffix.lower() in ANIMATED:
        fig, anim = _animation(model, pts, what, resolution, mapping, labels, title, trajectory)
    else:
        fig, anim = _still(model, pts, what, resolution, mapping, labels, title, trajectory), None
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=out.suffix)
    os.close(fd)
    try:
        if anim is not None:
            if out.suffix.lower() == ".mp4":
                matplotlib.rcParams["animation.ffmpeg_path"] = ffmpeg_path()
            anim.save(tmp, writer=_writer(out.suffix.lower()), dpi=100)
        else:
            fig.savefig(tmp, dpi=DPI, format=out.suffix.lower()[1:])
        umask = os.umask(0)  # mkstemp made the file 0600; give it a plain open()'s permissions
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out

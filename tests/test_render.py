"""`python -m iclebm render`: every output format from a small points file, GIF frames, strict rows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iclebm.checkpoints import CHECKPOINT_DIR, app_default_checkpoint, read_card
from iclebm.cli import main
from iclebm.probes.landscape import film_strip_lengths, frame_indices
from iclebm.render import figures

POINTS = "x,y\n" + "".join(f"{x:.3f},{y:.3f}\n" for x, y in
                           np.random.default_rng(0).normal(0, 3, size=(10, 2)).clip(-11, 11))


@pytest.fixture
def points_file(tmp_path: Path) -> Path:
    f = tmp_path / "points.csv"
    f.write_text(POINTS)
    return f


@pytest.fixture(autouse=True)
def small_langevin(monkeypatch: pytest.MonkeyPatch) -> None:
    # Few particles and frames: the frame count is what is tested, not the sampler.
    monkeypatch.setattr(figures, "LANGEVIN_PARTICLES", 20)
    monkeypatch.setattr(figures, "LANGEVIN_FRAMES", 6)


def render(points_file: Path, out: Path, *extra: str) -> int:
    return main(["render", "--points", str(points_file), "--out", str(out), "--resolution", "16", *extra])


@pytest.mark.parametrize("what", ["density", "landscape", "filmstrip", "langevin"])
def test_png(points_file: Path, tmp_path: Path, what: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / f"{what}.png"
    assert render(points_file, out, "--what", what) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def test_svg_and_pdf(points_file: Path, tmp_path: Path) -> None:
    assert render(points_file, tmp_path / "f.svg") == 0
    assert ET.parse(tmp_path / "f.svg").getroot().tag.endswith("svg")
    assert render(points_file, tmp_path / "f.pdf", "--what", "filmstrip") == 0
    data = (tmp_path / "f.pdf").read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-32:]


def test_gif_frames_are_the_animation_frames(points_file: Path, tmp_path: Path) -> None:
    assert render(points_file, tmp_path / "strip.gif", "--what", "filmstrip") == 0
    with Image.open(tmp_path / "strip.gif") as im:
        assert im.format == "GIF" and im.n_frames == len(film_strip_lengths(10))  # n = 0, 1, 2, 4, 8, 10
    assert render(points_file, tmp_path / "lv.gif", "--what", "langevin") == 0
    steps = read_card(app_default_checkpoint())["sampler"]["steps"]
    with Image.open(tmp_path / "lv.gif") as im:
        assert im.n_frames == len(frame_indices(steps, 6)) == 6


def test_mp4_has_the_animation_frames(points_file: Path, tmp_path: Path) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason='MP4 needs the "video" extra')
    assert render(points_file, tmp_path / "strip.mp4", "--what", "filmstrip") == 0
    data = (tmp_path / "strip.mp4").read_bytes()
    assert data[4:8] == b"ftyp"  # an MP4 container
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "strip.mp4"))
    assert frames == len(film_strip_lengths(10))


def test_mp4_without_an_encoder_is_refused_before_any_work(points_file: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    import builtins

    real_import = builtins.__import__

    def no_imageio_ffmpeg(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "imageio_ffmpeg":
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_imageio_ffmpeg)
    monkeypatch.setattr(figures.shutil, "which", lambda name: None)
    assert render(points_file, tmp_path / "strip.mp4", "--what", "filmstrip") == 2
    err = capsys.readouterr().err
    assert 'pip install "iclebm[video]"' in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [points_file]


def test_a_bad_row_exits_2_with_one_line_and_writes_nothing(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("x,y\n" + "".join(f"{i},0.5\n" for i in range(7)) + "abc,1\n1,2\n")
    out = tmp_path / "fig.png"
    assert render(f, out) == 2
    err = capsys.readouterr().err
    assert err == "error: row 8 (line 9): 'abc' is not a number\n"
    assert list(tmp_path.iterdir()) == [f]  # no figure, no temporary file


@pytest.mark.parametrize("content, args, message", [
    ("x,y\n100,200\n", (), "1 of 1 points lie outside the model's box [-12, 12]²; pass --rescale"),
    ("", (), "the table is empty"),
    ("x,y\n1,2\n", ("--what", "density", "--out-suffix", ".gif"), "an animation (.gif, .mp4) needs frames"),
    ("x,y\n1,2\n", ("--what", "density", "--out-suffix", ".mp4"), "an animation (.gif, .mp4) needs frames"),
    ("x,y\n1,2\n", ("--columns", "x,z"), "no column named 'z'"),
])
def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture, content: str, args: tuple,
                  message: str) -> None:
    f = tmp_path / "p.csv"
    f.write_text(content)
    suffix = ".png"
    if "--out-suffix" in args:
        suffix, args = args[-1], args[:-2]
    assert render(f, tmp_path / f"fig{suffix}", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [f]


def test_rescale_and_subset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "years.csv"
    rows = np.column_stack([np.arange(1950, 2050), np.linspace(300, 420, 100)])
    f.write_text("year,co2\n" + "".join(f"{a:g},{b:g}\n" for a, b in rows))
    assert render(f, tmp_path / "r.png", "--rescale", "--subset", "last") == 0
    err = capsys.readouterr().err
    assert "rescaled into the box [-12, 12]²: x' = (x - " in err
    assert "100 points; the model reads at most 64: kept the last 64." in err


def test_the_default_checkpoint_is_the_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICLEBM_CHECKPOINT", raising=False)
    monkeypatch.delenv("ICLEBM_CHECKPOINT_DIR", raising=False)
    assert app_default_checkpoint() == CHECKPOINT_DIR / "mog2d-wide.safetensors"


def test_a_regression_model_renders_its_density_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    linreg = str(CHECKPOINT_DIR / "linreg.safetensors")
    f = tmp_path / "xy.csv"
    f.write_text("x,y\n-2,-1\n0,0.5\n3,2\n")
    assert render(f, tmp_path / "reg.png", "--checkpoint", linreg) == 0
    assert render(f, tmp_path / "reg.gif", "--checkpoint", linreg, "--what", "filmstrip") == 2
    assert "draws a density model" in capsys.readouterr().err


def test_thinking_renders_as_a_still_and_a_gif_with_one_frame_per_shown_step(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from iclebm.dynamics.thinking import ThinkingConfig
    from iclebm.probes.regression_view import curve_frames

    linreg = str(CHECKPOINT_DIR / "linreg.safetensors")
    f = tmp_path / "xy.csv"
    f.write_text("x,y\n-2,-1\n0,0.5\n3,2\n")
    assert render(f, tmp_path / "think.png", "--checkpoint", linreg, "--what", "thinking") == 0
    assert Image.open(tmp_path / "think.png").size[0] > 100
    assert render(f, tmp_path / "think.gif", "--checkpoint", linreg, "--what", "thinking") == 0
    steps = ThinkingConfig.from_dict(read_card(linreg).get("thinking")).steps
    assert Image.open(tmp_path / "think.gif").n_frames == len(curve_frames(steps))
    assert render(f, tmp_path / "d.png", "--what", "thinking") == 2  # a density model cannot think
    assert "regression model's prediction by energy minimisation" in capsys.readouterr().err


def test_examples_table_scores_the_model_and_baselines_on_resampled_real_data() -> None:
    from iclebm.checkpoints import load_checkpoint
    from iclebm.evaluation.examples import example_markdown, example_table, resampled

    held = resampled(np.arange(20.0).reshape(10, 2), 4, 3, 0)
    for c, t in zip(held.context, held.test, strict=True):  # each split: a permutation of all points
        rows = sorted(map(tuple, torch.cat([c, t]).tolist()))
        assert rows == [(2.0 * i, 2.0 * i + 1) for i in range(10)]
    model = load_checkpoint(CHECKPOINT_DIR / "linreg.safetensors")
    table = example_table(model, "diabetes", splits=2, ns=(4, 8))
    assert table["ns"] == [4, 8] and table["n_test"] == 442 - 8
    assert {"model", "bayes", "ols"} <= set(table["nll"]) and "mse" in table
    assert all(np.isfinite(v).all() for v in table["mse"].values())
    assert example_markdown(table).count("\n") == 3  # header, rule, two rows
    with pytest.raises(ValueError, match="iris is a density data set"):
        example_table(model, "iris")

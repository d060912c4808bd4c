"""The "Your data" panel's logic, without a browser (its AppTest flows: test_app_data.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iclebm.data.points import BadRow, read_points
from iclebm.data.rescale import fit_into_box
from iclebm.errors import DataError
from iclebm.ui.data_panel import POLICIES, bad_rows_message, context_csv, current_map, prepare

BOX = (-12.0, 12.0)


def test_points_outside_the_box_are_rejected_with_their_count() -> None:
    p = prepare(np.array([[0, 0], [20, 0], [1, 1], [0, -30]]), ("x", "y"), BOX, 64)
    assert p.points == [(0.0, 0.0), (1.0, 1.0)] and p.mapping is None
    assert any("2 of 4 points lie outside the box [-12, 12]² and were rejected" in t for _, t in p.messages)
    with pytest.raises(DataError, match="all 2 points lie outside"):
        prepare(np.array([[20, 0], [0, 30]]), ("x", "y"), BOX, 64)


def test_rescale_keeps_every_point_shows_the_map_and_the_csv_gives_the_data_back() -> None:
    data = np.column_stack([np.linspace(1950, 2049, 50), np.linspace(300, 420, 50)])
    p = prepare(data, ("year", "co2"), BOX, 64, POLICIES[1])
    assert len(p.points) == 50 and p.mapping == fit_into_box(data, BOX)
    assert any(t.startswith("Rescaled into the box [-12, 12]²: year' = (year - ") for _, t in p.messages)
    loaded = {"map": p.mapping.as_dict(), "columns": ["year", "co2"], "points": p.points}
    back = read_points(context_csv(p.points, loaded))
    assert back.columns == ("year", "co2")
    np.testing.assert_array_equal(back.points, data)  # the exact map: your numbers, not rounded ones


def test_a_subset_beyond_the_cap_is_said() -> None:
    data = np.random.default_rng(0).uniform(-5, 5, size=(100, 2))
    p = prepare(data, ("x", "y"), BOX, 64, subset="first")
    np.testing.assert_array_equal(np.array(p.points), data[:64])
    assert ("info", "100 points; the model reads at most 64: kept the first 64.") in p.messages


def test_bad_rows_are_listed_then_counted() -> None:
    bad = [BadRow(i, i + 1, "'x' is not a number") for i in range(1, 12)]
    msg = bad_rows_message(bad)
    assert msg.startswith("11 bad row(s) skipped, the good rows kept: row 1 (line 2): 'x' is not a number;")
    assert "row 8 (line 9)" in msg and "row 9 (line 10)" not in msg and msg.endswith("; and 3 more.")


def test_the_map_follows_the_loaded_points_until_they_are_all_replaced() -> None:
    loaded = {"map": None, "columns": ["x", "y"], "points": [(1.0, 2.0), (3.0, 4.0)]}
    assert current_map([(1.0, 2.0), (3.0, 4.0), (0.5, 0.5)], loaded) is loaded  # a click added one
    assert current_map([(0.5, 0.5)], loaded) is None  # a draw replaced them
    assert context_csv([(0.5, 0.25)], None) == "x,y\n0.5,0.25\n"


def test_the_langevin_gif_animates_the_pages_own_run(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from iclebm.checkpoints import load_checkpoint
    from iclebm.probes.landscape import langevin_animation
    from iclebm.ui.data_panel import gif_bytes

    model = load_checkpoint()
    ctx = [(0.0, 0.0), (3.0, 1.0), (-2.0, 2.0)]
    traj = langevin_animation(model, ctx, BOX, n_particles=10, steps=7, step_size=0.05, noise_std=0.3,
                              max_frames=5)
    with Image.open(io.BytesIO(gif_bytes(model, ctx, "langevin", traj))) as im:
        assert im.format == "GIF" and im.n_frames == len(traj.steps) == 5
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason='MP4 needs the "video" extra')
    mp4 = tmp_path / "lv.mp4"
    mp4.write_bytes(gif_bytes(model, ctx, "langevin", traj, ".mp4"))
    assert imageio_ffmpeg.count_frames_and_secs(str(mp4))[0] == 5

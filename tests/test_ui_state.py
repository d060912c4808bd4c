"""Pure state updates of the explorer: points, clicks, the points table, share links."""

from __future__ import annotations

import math

import pytest

from iclebm.ui import state as S

BOX = (-12.0, 12.0)


@pytest.mark.parametrize("value, expected", [
    (1, 1.0), ("2.5", 2.5), (" -3 ", -3.0), (0.0, 0.0),
    ("abc", None), ("", None), (None, None), (float("nan"), None), (float("inf"), None), ("inf", None),
    (True, None), ([1], None),
])
def test_parse_number(value, expected) -> None:
    assert S.parse_number(value) == expected


def test_point_problem() -> None:
    assert S.point_problem(0, 0, BOX) is None
    assert S.point_problem(12, -12, BOX) is None  # the box edge is inside
    assert "outside" in S.point_problem(12.01, 0, BOX)
    assert "finite" in S.point_problem("x", 0, BOX)
    assert "finite" in S.point_problem(0, float("nan"), BOX)


def test_add_point_validates_and_never_mutates() -> None:
    pts = [(1.0, 2.0)]
    out, msg = S.add_point(pts, 3, -4, BOX, 64)
    assert out == [(1.0, 2.0), (3.0, -4.0)] and msg is None
    assert pts == [(1.0, 2.0)]
    for bad in [(20, 0), (0, float("inf")), ("a", 1)]:
        out, msg = S.add_point(pts, *bad, BOX, 64)
        assert out == pts and msg.startswith("Point not added")


def test_context_cap_keeps_the_newest_with_a_message() -> None:
    pts = [(float(i) / 10, 0.0) for i in range(64)]
    out, msg = S.add_point(pts, 5.0, 5.0, BOX, 64)
    assert len(out) == 64 and out[-1] == (5.0, 5.0) and out[0] == pts[1]
    assert "at most 64" in msg and "oldest 1" in msg
    kept, msg = S.cap_context(pts, 10)
    assert kept == pts[-10:] and "dropped the oldest 54" in msg
    assert S.cap_context(pts, 64) == (pts, None)


def test_add_points_skips_bad_ones_and_caps() -> None:
    out, msgs = S.add_points([(0.0, 0.0)], [(1, 1), (99, 0), (2, float("nan")), (3, 3)], BOX, 2)
    assert out == [(1.0, 1.0), (3.0, 3.0)]
    assert any("Skipped 2" in m for m in msgs) and any("at most 2" in m for m in msgs)


def test_undo() -> None:
    assert S.undo_point([(1.0, 1.0), (2.0, 2.0)]) == [(1.0, 1.0)]
    assert S.undo_point([]) == []


def test_pixel_to_data_maps_corners_and_centre() -> None:
    assert S.pixel_to_data(0, 0, 500, 400, BOX) == (-12.0, 12.0)  # top-left pixel: (lo, hi)
    assert S.pixel_to_data(500, 400, 500, 400, BOX) == (12.0, -12.0)
    x, y = S.pixel_to_data(250, 200, 500, 400, BOX)
    assert (x, y) == (0.0, 0.0)
    x, y = S.pixel_to_data(375, 100, 500, 400, BOX)
    assert math.isclose(x, 6.0) and math.isclose(y, 6.0)
    with pytest.raises(ValueError):
        S.pixel_to_data(1, 1, 0, 10, BOX)


def test_click_to_point() -> None:
    assert S.click_to_point({"x": 1.2345, "y": -2.5, "seq": 3}, BOX) == ((1.2345, -2.5), None)
    for bad in [None, "1,2", {"x": 1}, {"x": 13, "y": 0}, {"x": float("nan"), "y": 0}]:
        point, msg = S.click_to_point(bad, BOX)
        assert point is None and msg


def test_editor_valid_edit_delete_and_add() -> None:
    pts = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]
    res = S.apply_editor_changes(pts, {"edited_rows": {0: {"x": 5.0}}, "deleted_rows": [1],
                                       "added_rows": [{"x": "3", "y": -3}]}, BOX, 64)
    assert res.points == [(5.0, 0.0), (2.0, 2.0), (3.0, -3.0)]
    assert res.changed and not res.messages and not res.pending
    assert pts == [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]


def test_editor_rejects_bad_rows_and_keeps_the_valid_context() -> None:
    pts = [(0.0, 0.0), (1.0, 1.0)]
    changes = {
        "edited_rows": {"0": {"x": "abc"}, 1: {"y": float("inf")}},
        "added_rows": [{"x": 4.0, "y": 4.0}, {"x": float("nan"), "y": 1.0}, {"x": 50.0, "y": 0.0},
                       {"x": "zz", "y": None}],
        "deleted_rows": [],
    }
    res = S.apply_editor_changes(pts, changes, BOX, 64)
    assert res.points == [(0.0, 0.0), (1.0, 1.0), (4.0, 4.0)]
    text = " ".join(res.messages)
    assert "Row 1 rejected" in text and "Row 2 rejected" in text
    assert text.count("New row") == 3
    assert res.changed


def test_editor_partial_new_row_is_pending_not_an_error() -> None:
    res = S.apply_editor_changes([(0.0, 0.0)], {"added_rows": [{"x": 1.0}], "edited_rows": {}}, BOX, 64)
    assert res.pending and not res.changed and not res.messages and res.points == [(0.0, 0.0)]
    res = S.apply_editor_changes([(0.0, 0.0)], {"added_rows": [{}]}, BOX, 64)
    assert res.pending


def test_editor_caps_the_context() -> None:
    pts = [(0.0, float(i) / 10) for i in range(4)]
    res = S.apply_editor_changes(pts, {"added_rows": [{"x": 1, "y": 1}]}, BOX, 4)
    assert len(res.points) == 4 and res.points[-1] == (1.0, 1.0) and "at most 4" in res.messages[0]


def test_editor_ignores_nonsense_keys() -> None:
    nonsense = {"edited_rows": {"x": {}, 7: {"x": 1}}, "deleted_rows": ["a", 9]}
    res = S.apply_editor_changes([(0.0, 0.0)], nonsense, BOX, 64)
    assert res.points == [(0.0, 0.0)] and not res.changed
    assert S.apply_editor_changes([(0.0, 0.0)], None, BOX, 64).points == [(0.0, 0.0)]


def test_share_round_trip() -> None:
    state = S.ShareState(points=[(1.23456789, -2.5), (0.0, 11.9999)], view="density", log=True,
                         contours=False, arrows=False, model="mog2d", n_shown=1,
                         mixture={"k": 3, "spread": 3.0, "width": [0.33, 0.5], "seed": 7})
    q = S.encode_share(state)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in q.items())
    back, warnings = S.decode_share(q, BOX, 64)
    assert not warnings
    assert back.view == "density" and back.log and not back.contours and not back.arrows
    assert back.model == "mog2d" and back.n_shown == 1 and back.mixture == state.mixture
    for (x0, y0), (x1, y1) in zip(state.points, back.points, strict=True):
        assert abs(x0 - x1) <= 1e-4 and abs(y0 - y1) <= 1e-4
    # Query params may arrive as lists (repeated keys): the last one wins.
    again, _ = S.decode_share({k: [v] for k, v in q.items()}, BOX, 64)
    assert again == back


def test_share_defaults_and_bad_input() -> None:
    state, warnings = S.decode_share({}, BOX, 64)
    assert state == S.ShareState() and not warnings
    state, warnings = S.decode_share({"pts": "1,2;oops;3,99;4,5", "view": "weird", "n": "x", "mix": "1,2"},
                                     BOX, 64)
    assert state.points == [(1.0, 2.0), (4.0, 5.0)] and state.view == "energy"
    assert state.mixture is None and state.n_shown is None
    assert len(warnings) == 4


def test_share_caps_long_contexts() -> None:
    pts = ";".join(f"{i / 10},0" for i in range(70))
    state, warnings = S.decode_share({"pts": pts}, BOX, 64)
    assert len(state.points) == 64 and state.points[0] == (0.6, 0.0)
    assert any("at most 64" in w for w in warnings)

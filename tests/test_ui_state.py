"""Pure state updates of the explorer: points, clicks, the points table, share links."""

from __future__ import annotations

import math

import pytest

from iclebm.ui import page_tables as T
from iclebm.ui import state as S
from iclebm.ui.page_state import Prop, Table

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
    assert res.pending == [(None, 1.0)]  # the NaN refused, the valid y kept for the user to finish


def test_editor_partial_new_row_is_pending_not_an_error() -> None:
    res = S.apply_editor_changes([(0.0, 0.0)], {"added_rows": [{"x": 1.0}], "edited_rows": {}}, BOX, 64)
    assert res.pending and not res.changed and not res.messages and res.points == [(0.0, 0.0)]
    res = S.apply_editor_changes([(0.0, 0.0)], {"added_rows": [{}]}, BOX, 64)
    assert res.pending


def test_editor_letters_are_refused_not_zero() -> None:
    """Text typed into a cell arrives as typed: letters keep the old value with a message."""
    pts = [(1.5, -2.0), (3.0, 3.0)]
    res = S.apply_editor_changes(pts, {"edited_rows": {0: {"x": "abc"}, 1: {"y": ""}}}, BOX, 64)
    assert res.points == pts and not res.changed
    assert "Row 1 rejected: x = 'abc' is not a number; kept (1.500, -2.000)." in res.messages
    assert any(m.startswith("Row 2 rejected: y is empty") for m in res.messages)
    res = S.apply_editor_changes(pts, {"edited_rows": {0: {"x": " 0 "}}}, BOX, 64)  # a real 0 is taken
    assert res.points == [(0.0, -2.0), (3.0, 3.0)] and res.changed and not res.messages


def test_editor_keeps_every_half_filled_row_pending() -> None:
    """A complete row joins the context; the second, half-filled one stays in the table (it used to
    vanish without a word when the table was redrawn)."""
    pts = [(0.0, 0.0)]
    added = [{"x": "1", "y": "2"}, {"x": "4"}, {"y": "-1"}]
    res = S.apply_editor_changes(pts, {"added_rows": added}, BOX, 64)
    assert res.points == [(0.0, 0.0), (1.0, 2.0)] and res.changed and not res.messages
    assert res.pending == [(4.0, None), (None, -1.0)]
    # The table shows points then pending rows: row 4 (index 3) is the second pending row.
    res = S.apply_editor_changes(res.points, {"edited_rows": {3: {"x": "5"}}}, BOX, 64, res.pending)
    assert res.points == [(0.0, 0.0), (1.0, 2.0), (5.0, -1.0)] and res.pending == [(4.0, None)]
    # A bad value in a pending row is refused and the row keeps what it had; deleting it removes it.
    res2 = S.apply_editor_changes(res.points, {"edited_rows": {3: {"y": "zz"}}}, BOX, 64, res.pending)
    assert res2.points == res.points and res2.pending == [(4.0, None)]
    assert res2.messages == ["Row 4: y = 'zz' is not a number; not taken."]
    res3 = S.apply_editor_changes(res.points, {"edited_rows": {3: {"y": "99"}}}, BOX, 64, res.pending)
    assert res3.pending == [(4.0, None)] and "outside the box" in res3.messages[0]
    res4 = S.apply_editor_changes(res.points, {"deleted_rows": [3]}, BOX, 64, res.pending)
    assert res4.points == res.points and res4.pending == [] and not res4.messages


def test_editor_caps_the_context() -> None:
    pts = [(0.0, float(i) / 10) for i in range(4)]
    res = S.apply_editor_changes(pts, {"added_rows": [{"x": 1, "y": 1}]}, BOX, 4)
    assert len(res.points) == 4 and res.points[-1] == (1.0, 1.0) and "at most 4" in res.messages[0]


def test_editor_ignores_nonsense_keys() -> None:
    nonsense = {"edited_rows": {"x": {}, 7: {"x": 1}}, "deleted_rows": ["a", 9]}
    res = S.apply_editor_changes([(0.0, 0.0)], nonsense, BOX, 64)
    assert res.points == [(0.0, 0.0)] and not res.changed
    assert S.apply_editor_changes([(0.0, 0.0)], None, BOX, 64).points == [(0.0, 0.0)]


# ---- page state: one property table per page -------------------------------------------------

BOUND = {  # the tables as a page binds them for a model with this box, a 64-point context, 4 layers x 4 heads
    "density": T.DENSITY.bind(points={"lo": -12, "hi": 12, "size": 64}, n_shown={"hi": 64}, mix_n={"hi": 64}),
    "inside": T.INSIDE.bind(points={"lo": -12, "hi": 12, "size": 64}, in_query={"lo": -12, "hi": 12},
                            in_layer={"hi": 4}, in_head={"hi": 4}),
    "regression": T.REGRESSION.bind(reg_points={"lo": -12, "hi": 12, "size": 64}, reg_task={"size": 64},
                                    reg_n={"hi": 64}),
    "train": T.TRAIN,
}
MIX = {"k": [1, 6], "spread": 3.0, "width": [0.2, 1.5], "seed": 2, "ratio": [1.0, 4.0], "limit": 6.5}
# A value other than the default for every property of every page (as the widgets hold them).
CHANGED = {
    "density": {"points": [(1.2346, -2.5), (0.0, 11.9999)], "view": "density", "resolution": 140,
                "show_bayes": True, "log_scale": True, "contours": False, "arrows": False, "show_true": False,
                "n_shown": 1, "mixture": MIX, "mix_from_prior": False, "mix_k": (2, 5), "mix_spread": 4.5,
                "mix_width": (0.25, 0.75), "mix_ratio": (1.0, 3.5), "mix_seed": 17, "mix_n": 12,
                "mix_mode": "one at a time"},
    "inside": {"points": [(1.0, 2.0), (-3.5, 0.25)], "mixture": {"k": 3, "spread": 3.0, "width": [0.3, 0.5],
                                                                  "seed": 7},
               "in_query": (0.5, -1.25), "in_mode": "attention", "in_layer": 2, "in_head": 4, "in_obj": "cd",
               "in_k": 40, "in_lr": 3e-3, "in_short": 2},
    "regression": {"reg_points": [(1.0, -2.5), (0.125, 3.0)], "reg_view": "energy", "reg_k": 42,
                   "reg_ols": False, "reg_bayes": False,
                   "reg_task": {"family": "sinusoid", "seed": 3, "n": 9},
                   "reg_family": "sinusoid", "reg_seed": 5, "reg_n": 30, "reg_mode": "point by point"},
    "train": {"tr_mode": "finetune", "tr_objective": "cd", "tr_lr": 1e-3, "tr_batch": 5, "tr_chains": 3,
              "tr_lsteps": 20, "tr_lstep": 0.1, "tr_lnoise": 0.5, "tr_layers": 3, "tr_d": 64, "tr_pool": 16,
              "tr_curve_pool": True},
}


def test_every_property_of_every_page_round_trips_through_its_link() -> None:
    for page, table in BOUND.items():
        values = CHANGED[page]
        assert set(values) == set(table.names()), f"{page}: give every property a changed value here"
        assert not table.validate(values), table.validate(values)
        q = table.encode(values)
        assert set(q) == {p.key for p in table.props}  # nothing is at its default, so every key travels
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in q.items())
        back, warnings = table.decode(q)
        assert warnings == [], (page, warnings)
        for name, value in values.items():
            got = back[name]
            same = (list(map(tuple, got)) == list(map(tuple, value)) if table[name].kind == "points"
                    else got == (tuple(value) if isinstance(value, tuple) else value))
            assert same, (page, name, value, got)
        # query parameters may arrive as lists (repeated keys): the last one wins
        assert table.decode({k: ["junk", v] for k, v in q.items()})[0] == back


def test_defaults_are_left_out_of_the_link_and_an_empty_link_gives_the_defaults() -> None:
    for table in BOUND.values():
        assert table.encode(table.defaults()) == {}
        assert table.decode({}) == (table.defaults(), [])
        one = next(p for p in table.props if p.kind == "bool") if any(
            p.kind == "bool" for p in table.props) else table.props[0]
        changed = {**table.defaults(), one.name: CHANGED[table.page][one.name]}
        assert list(table.encode(changed)) == [one.key]  # only the one that differs


def test_tables_follow_the_model_defaults_and_bounds() -> None:
    """Defaults bound per run (the model's prior) are what the link leaves out."""
    wide = BOUND["density"].bind(mix_k={"default": (1, 6)}, mix_width={"default": (0.2, 1.5)})
    assert "mixk" not in wide.encode({"mix_k": (1, 6)}) and wide.encode({"mix_k": (3, 3)}) == {"mixk": "3-3"}
    small = BOUND["regression"].bind(reg_n={"hi": 8})
    values, warnings = small.decode({"n": "9"})
    assert values["reg_n"] == 16 and "n='9'" in warnings[0] and "1 to 8" in warnings[0]


@pytest.mark.parametrize(
    "page,params,fragment,name",
    [
        ("density", {"view": "weird"}, "allowed: energy, density", "view"),
        ("density", {"log": "maybe"}, "allowed: 1 or 0", "log_scale"),
        ("density", {"grid": "7"}, "allowed: 60, 80, 100, 140, 200", "resolution"),
        ("density", {"n": "x"}, "n='x'", "n_shown"),
        ("density", {"mix": "1,2"}, "unreadable mixture", "mixture"),
        ("density", {"mixk": "5-2"}, "low end is above", "mix_k"),
        ("density", {"mixwidth": "0.01-0.5"}, "0.1 to 2", "mix_width"),
        ("inside", {"q": "13,0"}, "outside the box", "in_query"),
        ("inside", {"q": "1"}, "not x,y", "in_query"),
        ("inside", {"mode": "x"}, "allowed: query, attention, influence", "in_mode"),
        ("inside", {"layer": "5"}, "layer='5'", "in_layer"),
        ("inside", {"head": "0"}, "head='0'", "in_head"),
        ("inside", {"k": "501"}, "k='501'", "in_k"),
        ("inside", {"lr": "0.5"}, "lr='0.5'", "in_lr"),
        ("inside", {"short": "-1"}, "short='-1'", "in_short"),
        ("inside", {"obj": "sgd"}, "obj='sgd'", "in_obj"),
        ("regression", {"task": "spiral,1,2"}, "family one of linear, sinusoid", "reg_task"),
        ("regression", {"k": "500"}, "k='500'", "reg_k"),
        ("train", {"lr": "0.0042"}, "lr='0.0042'", "tr_lr"),
        ("train", {"batch": "2.5"}, "integers 1 to 64", "tr_batch"),
        ("train", {"obj": "sgd"}, "obj='sgd'", "tr_objective"),
        ("train", {"mode": "resume"}, "allowed: scratch, finetune", "tr_mode"),
    ],
)
def test_a_bad_link_value_is_refused_with_a_message_and_keeps_its_default(page, params, fragment,
                                                                          name) -> None:
    table = BOUND[page]
    values, warnings = table.decode(params)
    assert len(warnings) == 1 and fragment in warnings[0], warnings
    assert "kept the default" in warnings[0] or "skipped" in warnings[0]
    assert values[name] == table[name].default


def test_unknown_link_settings_are_named_but_the_model_is_not() -> None:
    values, warnings = BOUND["train"].decode({"model": "mog2d", "colour": "red"})
    assert values == BOUND["train"].defaults() and len(warnings) == 1 and "colour=" in warnings[0]


def test_link_points_skip_bad_ones_and_keep_the_newest() -> None:
    table = BOUND["density"]
    values, warnings = table.decode({"pts": "1,2;oops;3,99;4,5"})
    assert values["points"] == [(1.0, 2.0), (4.0, 5.0)] and "2 unreadable or out-of-box" in warnings[0]
    pts = ";".join(f"{i / 10},0" for i in range(70))
    values, warnings = table.decode({"pts": pts})
    assert len(values["points"]) == 64 and values["points"][0] == (0.6, 0.0)
    assert any("at most 64" in w for w in warnings)


def test_old_links_still_load() -> None:
    """Links written before the tables: obj=nll (now exact), five-part mixtures without a limit."""
    values, warnings = BOUND["inside"].decode({"obj": "nll", "mix": "3,3,0.33,0.5,7"})
    assert warnings == [] and values["in_obj"] == "exact"
    assert values["mixture"] == {"k": 3, "spread": 3.0, "width": [0.33, 0.5], "seed": 7}
    assert BOUND["inside"].encode({"in_obj": "nll"}) == {}  # written as the canonical (default) name
    assert BOUND["inside"].encode({"in_obj": "cd"}) == {"obj": "cd"}


def test_a_table_refuses_two_properties_on_one_key() -> None:
    with pytest.raises(ValueError, match="share a name or a URL key"):
        Table("x", (Prop("a", "k", "bool", False), Prop("b", "k", "bool", False)))
    with pytest.raises(ValueError, match="reserved"):
        Table("x", (Prop("a", "model", "bool", False),))
    with pytest.raises(ValueError, match="unknown property kind"):
        Prop("a", "a", "colour", None)

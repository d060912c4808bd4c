"""Reading your own points (iclebm.data): formats, bad rows by number, refusals, the exact affine map
into the box, subsets, and the example data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iclebm.data.examples import EXAMPLES, load_example
from iclebm.data.points import points_csv, read_points
from iclebm.data.rescale import AffineMap, choose_subset, fit_into_box, outside_box
from iclebm.errors import BadRowError, DataError

GOOD = np.array([[1.5, -2.0], [3.0, 4.25], [-0.5, 0.0]])


@pytest.mark.parametrize("text", [
    "x,y\n1.5,-2\n3,4.25\n-0.5,0\n",  # CSV with a header
    "1.5\t-2\n3\t4.25\n-0.5\t0",  # TSV without one
    "1.5 -2\n  3   4.25\n-0.5 0\n",  # whitespace, ragged
    "a;b\r\n1.5;-2\r\n\r\n3;4.25\r\n# a comment\r\n-0.5;0\r\n",  # semicolons, CRLF, blank + comment lines
])
def test_formats_read_the_same_points(text: str) -> None:
    t = read_points(text)
    np.testing.assert_array_equal(t.points, GOOD)
    assert t.bad == [] and t.rows == [1, 2, 3]


def test_a_path_bytes_and_a_file_name_read_alike(tmp_path: Path) -> None:
    f = tmp_path / "pts.csv"
    f.write_text("x,y\n1.5,-2\n3,4.25\n-0.5,0\n")
    for source in (f, str(f), f.read_bytes(), b"\xef\xbb\xbf" + f.read_bytes()):  # a BOM too
        np.testing.assert_array_equal(read_points(source).points, GOOD)


def test_bad_rows_are_reported_by_row_and_line_and_good_rows_kept() -> None:
    text = "x,y\n1,2\n\nabc,3\n4,nan\n5,6,7\n8,inf\n9,\n10,11\n"
    t = read_points(text)
    np.testing.assert_array_equal(t.points, [[1, 2], [10, 11]])
    assert t.rows == [1, 7]
    assert [str(b) for b in t.bad] == [
        "row 2 (line 4): 'abc' is not a number",
        "row 3 (line 5): 'nan' is not a finite number",
        "row 4 (line 6): 3 field(s), expected 2",
        "row 5 (line 7): 'inf' is not a finite number",
        "row 6 (line 8): an empty cell is not a number",
    ]


def test_strict_stops_at_the_first_bad_row() -> None:
    text = "x,y\n" + "".join(f"{i},{i}\n" for i in range(7)) + "abc,1\n2,2\n"
    with pytest.raises(BadRowError) as e:
        read_points(text, strict=True)
    assert str(e.value) == "row 8 (line 9): 'abc' is not a number"
    assert (e.value.row, e.value.line) == (8, 9)


def test_two_columns_of_a_wide_table_by_name_or_index() -> None:
    text = "id,a,b,c\n1,0.1,0.2,0.3\n2,1.1,1.2,1.3\n"
    t = read_points(text, ("c", "a"))
    np.testing.assert_array_equal(t.points, [[0.3, 0.1], [1.3, 1.1]])
    assert t.columns == ("c", "a") and t.n_columns == 4
    np.testing.assert_array_equal(read_points(text, (1, 2)).points, [[0.1, 0.2], [1.1, 1.2]])
    with pytest.raises(DataError, match="no column named 'd'"):
        read_points(text, ("d", "a"))
    with pytest.raises(DataError, match="column 4 does not exist"):
        read_points(text, (0, 4))


@pytest.mark.parametrize("source, message", [
    ("", "empty"),
    ("\n  \n# only a comment\n", "empty"),
    ("1\n2\n3\n", "single column"),
    ("x\n1\n2\n", "single column"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "binary"),
    (b"1,2\n\xff\xfe,3\n", "not UTF-8"),
    ("x,y\nabc,1\n2,def\n", "no usable row: all 2 rows are bad; the first: row 1 \\(line 2\\)"),
    ("1,2\n3\t4\n5,6\n", "mixed delimiters: comma \\(first on line 1\\), tab \\(first on line 2\\)"),
    ("x,y\n", "header but no data"),
])
def test_unusable_input_is_refused_with_a_typed_error(source: str | bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_points(source)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "big.csv"
    f.write_text("1,2\n" * 1000)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read a file above the limit"))
    with pytest.raises(DataError, match="4,000 bytes; points files above 1,000 bytes are refused"):
        read_points(f, max_bytes=1000)


def test_csv_export_reads_back_to_the_same_numbers() -> None:
    pts = np.random.default_rng(0).normal(size=(20, 2)) * 1e3
    np.testing.assert_array_equal(read_points(points_csv(pts)).points, pts)


@pytest.mark.parametrize("data", [
    np.random.default_rng(1).uniform(1990, 2025, size=(200, 2)),  # far from 0: centred
    np.random.default_rng(2).normal(0, 1e-3, size=(200, 2)),  # straddles 0: only scaled
    np.column_stack([np.random.default_rng(3).uniform(0.1, 7, 200),  # near 0, one-signed
                     -np.random.default_rng(4).lognormal(3, 2, 200)]),  # negative, many decades
    np.array([[5.1, 1.4], [4.9, 1.4], [7.0, 4.7], [6.3, 6.0]]),  # typed decimals
])
def test_the_box_map_fits_the_box_and_round_trips_exactly(data: np.ndarray) -> None:
    box = (-12.0, 12.0)
    m = fit_into_box(data, box)
    inside = m.to_box(data)
    assert not outside_box(inside, box).any()
    assert np.abs(inside).max(axis=0).min() >= 0.9 * 12 / 2 / 2  # each axis fills a fair share
    np.testing.assert_array_equal(m.to_data(inside), data)  # exact, float64
    assert AffineMap.from_dict(m.as_dict()) == m


def test_outside_box_counts_points_outside() -> None:
    assert outside_box([[0, 0], [13, 0], [0, -12.5], [12, -12]], (-12, 12)).tolist() == [False, True, True,
                                                                                       False]


def test_subsets() -> None:
    assert choose_subset(10, 64)[1] is None
    idx, msg = choose_subset(100, 64, "first")
    assert idx.tolist() == list(range(64)) and "kept the first 64" in msg
    assert choose_subset(100, 64, "last")[0].tolist() == list(range(36, 100))
    r1, r2 = choose_subset(100, 64, "random", seed=3)[0], choose_subset(100, 64, "random", seed=3)[0]
    assert r1.tolist() == r2.tolist() and len(set(r1.tolist())) == 64 and (np.diff(r1) > 0).all()
    with pytest.raises(ValueError, match="unknown subset"):
        choose_subset(100, 64, "middle")


@pytest.mark.parametrize("name, box", [("iris", (-12.0, 12.0)), ("diabetes", (-10.0, 10.0)),
                                       ("diabetes", (-6.0, 6.0))])
def test_examples_load_standardised_into_the_box(name: str, box: tuple[float, float]) -> None:
    ex = load_example(name, box)
    n = {"iris": 150, "diabetes": 442}[name]
    assert ex.points.shape == (n, 2) and ex.raw.shape == (n, 2)
    assert not outside_box(ex.points, box).any()
    np.testing.assert_allclose(ex.points.mean(axis=0), 0, atol=0.05)
    np.testing.assert_allclose(ex.mapping.to_data(ex.points), ex.raw, rtol=1e-12, atol=1e-12)
    assert "scikit-learn" in EXAMPLES[name].source
    if name == "iris":  # petal length 1.0 ... 6.9 cm
        assert ex.raw[:, 0].min() == 1.0 and ex.raw[:, 0].max() == 6.9


def test_unknown_example() -> None:
    with pytest.raises(DataError, match="unknown example 'wine'"):
        load_example("wine", (-12, 12))

"""Page state as one property table per page (pure code, no Streamlit; unit-tested).

A page declares its state once, as a `Table` of `Prop`s: the session-state name (the widget's key),
the kind of value, its default, its bounds or choices, and its key in the share link. From that one
table come the widgets' defaults (`Table.defaults`), the link (`Table.encode`, defaults left out so
links stay short) and the link's validation (`Table.decode`: a bad value is refused with a message
and the property keeps its default; nothing is replaced silently). This is TensorFlow Playground's
`state.ts` design; the tables of the four pages are in `iclebm.ui.page_tables`.

Bounds that depend on the model (the box, the context cap, the number of layers) and defaults that
follow the model (the mixture panel's prior) are bound per run with `Table.bind`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from iclebm.ui.state import parse_number, point_problem

# Digits kept for coordinates in links: 1e-4 of a unit is far below the 1%-of-box click tolerance.
URL_DIGITS = 4
TRUE, FALSE = "1", "0"
MEAN = "mean"  # an index property's "all of them" value (layer / head: the mean)

KINDS = ("bool", "int", "float", "choice", "int_range", "float_range", "points", "point", "mixture",
         "task", "index")


class BadValue(ValueError):
    """A link's value a property refuses; the message says what is allowed."""


@dataclass(frozen=True)
class Prop:
    """One property of a page's state."""

    name: str  # session-state key (the widget's key)
    key: str  # the URL query key
    kind: str  # one of KINDS
    default: Any
    lo: float | None = None  # bounds: numbers, ranges, coordinates of points, index 1..hi
    hi: float | None = None
    choices: tuple = ()  # for "choice": the allowed values (strings or numbers)
    size: int | None = None  # for "points": the most kept (the newest); for "task": the most points
    canon: Callable[[str], str] | None = None  # for "choice": a link's alias -> the canonical value
    families: tuple[str, ...] = ()  # for "task": the allowed families

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown property kind {self.kind!r} for {self.name}")


# ---- formatting ----------------------------------------------------------------------------------


def fmt_coord(v: float) -> str:
    s = f"{float(v):.{URL_DIGITS}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def fmt_number(v: float) -> str:
    """A number as short as it reads back equal (ints without a decimal point)."""
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else format(v, ".10g")


def encode_points(points: Sequence[Sequence[float]]) -> str:
    return ";".join(f"{fmt_coord(x)},{fmt_coord(y)}" for x, y in points)


DEFAULT_LIMIT = 8.0  # the mixture prior's mean limit when a link does not say (old links)


def encode_mixture(m: Mapping[str, Any]) -> str:
    """k,spread,width_lo,width_hi,seed[,ratio_lo,ratio_hi][,L<limit>]; k is "3" or a range "1-6".
    The limit of the means is written only when it is not the default 8 (old links stay valid)."""
    k = m["k"]
    k_txt = f"{int(k[0])}-{int(k[1])}" if isinstance(k, (list, tuple)) else str(int(k))
    lo, hi = m["width"]
    parts = [k_txt, fmt_coord(m["spread"]), fmt_coord(lo), fmt_coord(hi), str(int(m["seed"]))]
    if "ratio" in m:
        parts += [fmt_coord(m["ratio"][0]), fmt_coord(m["ratio"][1])]
    if float(m.get("limit", DEFAULT_LIMIT)) != DEFAULT_LIMIT:
        parts.append(f"L{fmt_coord(m['limit'])}")
    return ",".join(parts)


def decode_mixture(text: str) -> dict | None:
    """The inverse of `encode_mixture`; None for anything unreadable or out of range."""
    parts = text.split(",")
    limit = None
    if parts and parts[-1].startswith("L"):
        limit = parse_number(parts.pop()[1:])
        if limit is None or limit <= 0:
            return None
    if len(parts) not in (5, 7):
        return None
    k_lo, _, k_hi = parts[0].partition("-")
    ks = [parse_number(k_lo), parse_number(k_hi or k_lo)]
    nums = [parse_number(p) for p in parts[1:]]
    if any(v is None for v in ks + nums):
        return None
    spread, lo, hi, seed = nums[:4]  # type: ignore[misc]
    if not (1 <= ks[0] <= ks[1] <= 16 and spread > 0 and 0 < lo <= hi):  # type: ignore[operator]
        return None
    mix: dict[str, Any] = {"k": int(ks[0]) if ks[0] == ks[1] else [int(ks[0]), int(ks[1])],
                           "spread": float(spread), "width": [float(lo), float(hi)], "seed": int(seed)}
    if len(nums) == 6:
        r_lo, r_hi = float(nums[4]), float(nums[5])  # type: ignore[arg-type]
        if not 1.0 <= r_lo <= r_hi <= 16.0:
            return None
        mix["ratio"] = [r_lo, r_hi]
    if limit is not None:
        mix["limit"] = float(limit)
    return mix


def encode_value(p: Prop, v: Any) -> str:
    """One property's value as link text."""
    if p.kind == "bool":
        return TRUE if v else FALSE
    if p.kind in ("int", "float"):
        return fmt_number(v)
    if p.kind == "choice":
        if isinstance(v, str) and p.canon is not None:
            try:
                v = p.canon(v)  # links carry the canonical name (an old alias reads back the same)
            except (ValueError, KeyError):
                pass
        return v if isinstance(v, str) else fmt_number(v)
    if p.kind in ("int_range", "float_range"):
        return f"{fmt_number(v[0])}-{fmt_number(v[1])}"
    if p.kind == "points":
        return encode_points(v)
    if p.kind == "point":
        return f"{fmt_coord(v[0])},{fmt_coord(v[1])}"
    if p.kind == "mixture":
        return encode_mixture(v)
    if p.kind == "task":
        return f"{v['family']},{int(v['seed'])},{int(v['n'])}"
    return str(v)  # index: "mean" or 1..n


# ---- parsing and checking ------------------------------------------------------------------------


def _bounds_text(p: Prop, ints: bool) -> str:
    return f"{'integers ' if ints else ''}{fmt_number(p.lo)} to {fmt_number(p.hi)}"  # type: ignore[arg-type]


def _number(p: Prop, text: str, ints: bool) -> float:
    v = parse_number(text)
    ok = v is not None and (not ints or float(v).is_integer())
    if ok and p.lo is not None:
        ok = v >= p.lo  # type: ignore[operator]
    if ok and p.hi is not None:
        ok = v <= p.hi  # type: ignore[operator]
    if not ok:
        raise BadValue(f"allowed: {_bounds_text(p, ints)}")
    return int(v) if ints else float(v)  # type: ignore[arg-type]


def _range(p: Prop, text: str, ints: bool) -> tuple:
    # "lo-hi"; a minus sign can only start a part, so split at the first '-' after a digit
    cut = next((i for i in range(1, len(text)) if text[i] == "-" and text[i - 1] not in "eE-"), -1)
    if cut < 0:
        raise BadValue(f"allowed: lo-hi, {_bounds_text(p, ints)}")
    lo, hi = _number(p, text[:cut], ints), _number(p, text[cut + 1:], ints)
    if lo > hi:
        raise BadValue("the range's low end is above its high end")
    return (lo, hi)


def _choice(p: Prop, text: str) -> Any:
    if p.canon is not None:
        try:
            text = p.canon(text)
        except (ValueError, KeyError):
            pass
    for c in p.choices:
        if isinstance(c, str):
            if c == text:
                return c
        else:
            v = parse_number(text)
            if v is not None and math.isclose(v, c, rel_tol=1e-6):
                return c
    raise BadValue("allowed: " + ", ".join(c if isinstance(c, str) else fmt_number(c) for c in p.choices))


def _points(p: Prop, text: str, warnings: list[str]) -> list[tuple[float, float]]:
    box = (p.lo, p.hi)
    pts, bad = [], 0
    for part in text.split(";") if text else []:
        xy = part.split(",")
        if len(xy) != 2 or point_problem(xy[0], xy[1], box) is not None:  # type: ignore[arg-type]
            bad += 1
            continue
        pts.append((float(xy[0]), float(xy[1])))
    if bad:
        warnings.append(f"The link had {bad} unreadable or out-of-box point(s) in {p.key}=; "
                        "they were skipped.")
    if p.size is not None and len(pts) > p.size:
        warnings.append(f"The model reads at most {p.size} context points: the link's oldest "
                        f"{len(pts) - p.size} were dropped.")
        pts = pts[-p.size:]
    return pts


def _point(p: Prop, text: str) -> tuple[float, float]:
    xy = text.split(",")
    problem = "not x,y" if len(xy) != 2 else point_problem(xy[0], xy[1], (p.lo, p.hi))  # type: ignore[arg-type]
    if problem:
        raise BadValue(problem)
    return (float(xy[0]), float(xy[1]))


def _task(p: Prop, text: str) -> dict:
    parts = text.split(",")
    nums = [parse_number(x) for x in parts[1:]]
    if len(parts) != 3 or parts[0] not in p.families or any(
            v is None or v < 0 or not float(v).is_integer() for v in nums):
        raise BadValue(f"allowed: family,seed,n with family one of {', '.join(p.families)}")
    n = int(nums[1])  # type: ignore[arg-type]
    if p.size is not None and n > p.size:
        raise BadValue(f"at most {p.size} points")
    return {"family": parts[0], "seed": int(nums[0]), "n": n}  # type: ignore[arg-type]


def _index(p: Prop, text: str) -> int | str:
    if text == MEAN:
        return MEAN
    v = parse_number(text)
    if v is None or not float(v).is_integer() or not 1 <= v <= (p.hi or 0):
        raise BadValue(f"allowed: {MEAN} or 1 to {fmt_number(p.hi or 0)}")
    return int(v)


def decode_value(p: Prop, text: str, warnings: list[str]) -> Any:
    """One property's value from link text; raises BadValue with what is allowed. Points are
    lenient (the readable ones are kept) and add their own warnings."""
    if p.kind == "bool":
        if text not in (TRUE, FALSE):
            raise BadValue("allowed: 1 or 0")
        return text == TRUE
    if p.kind in ("int", "float"):
        return _number(p, text, p.kind == "int")
    if p.kind == "choice":
        return _choice(p, text)
    if p.kind in ("int_range", "float_range"):
        return _range(p, text, p.kind == "int_range")
    if p.kind == "points":
        return _points(p, text, warnings)
    if p.kind == "point":
        return _point(p, text)
    if p.kind == "mixture":
        mix = decode_mixture(text)
        if mix is None:
            raise BadValue("unreadable mixture settings")
        return mix
    if p.kind == "task":
        return _task(p, text)
    return _index(p, text)


def problem(p: Prop, v: Any) -> str | None:
    """Why `v` is not a valid value of `p` (None when it is): the value must survive its own link."""
    if v is None:
        return None if p.default is None else "missing"
    if p.kind == "bool" and not isinstance(v, bool):
        return f"{v!r} is not a bool"
    try:
        scratch: list[str] = []
        back = decode_value(p, encode_value(p, v), scratch)
    except (BadValue, TypeError, KeyError, IndexError, ValueError) as e:
        return str(e)
    if scratch:
        return scratch[0]
    if p.kind == "points" and len(back) != len(v):
        return "points lost"
    return None


def _first(v: Any) -> str | None:
    if isinstance(v, (list, tuple)):
        v = v[-1] if v else None
    return None if v is None else str(v)


def _same(p: Prop, a: Any, b: Any) -> bool:
    """Equal as the link sees them (a widget's tuple equals a default list; 1e-3 equals 0.001)."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return encode_value(p, a) == encode_value(p, b)
    except (TypeError, KeyError, IndexError, ValueError):
        return False


# ---- a page's table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A page's state: its properties, in the order the link lists them."""

    page: str
    props: tuple[Prop, ...]
    passthrough: tuple[str, ...] = field(default=("model",))  # URL keys another part reads (the model)

    def __post_init__(self) -> None:
        names = [p.name for p in self.props]
        keys = [p.key for p in self.props]
        if len(set(names)) != len(names) or len(set(keys)) != len(keys):
            raise ValueError(f"{self.page}: two properties share a name or a URL key")
        if set(keys) & set(self.passthrough):
            raise ValueError(f"{self.page}: a property uses a reserved URL key")

    def __getitem__(self, name: str) -> Prop:
        for p in self.props:
            if p.name == name:
                return p
        raise KeyError(name)

    def names(self) -> list[str]:
        return [p.name for p in self.props]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.props}

    def bind(self, **changes: Mapping[str, Any]) -> Table:
        """This table with some properties' fields replaced, e.g. bind(points={"lo": -8, "hi": 8})."""
        unknown = set(changes) - set(self.names())
        if unknown:
            raise KeyError(f"{self.page} has no properties {sorted(unknown)}")
        props = tuple(replace(p, **changes[p.name]) if p.name in changes else p for p in self.props)
        return replace(self, props=props)

    def encode(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Flat str -> str query parameters; values equal to their default are left out."""
        q: dict[str, str] = {}
        for p in self.props:
            v = values.get(p.name, p.default)
            if v is None or _same(p, v, p.default):
                continue
            q[p.key] = encode_value(p, v)
        return q

    def decode(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Every property's value from a link: the link's where valid, else the default. A refused
        value and an unknown parameter each add a warning that names it."""
        values = self.defaults()
        warnings: list[str] = []
        by_key = {p.key: p for p in self.props}
        for key in params:
            if key not in by_key and key not in self.passthrough:
                warnings.append(f"Ignored the link's unknown setting {key}= (this page has no such setting).")
        for p in self.props:
            text = _first(params.get(p.key))
            if text is None:
                continue
            try:
                values[p.name] = decode_value(p, text, warnings)
            except BadValue as e:
                warnings.append(f"Ignored the link's {p.key}={text!r} ({e}); kept the default.")
        return values, warnings

    def validate(self, values: Mapping[str, Any]) -> list[str]:
        """The properties whose values could not travel in a link, with the reason."""
        return [f"{p.name}: {why}" for p in self.props
                if (why := problem(p, values.get(p.name, p.default))) is not None]

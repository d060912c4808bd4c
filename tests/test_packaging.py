"""The README and pyproject say what is true: the Streamlit lower bound covers the APIs the app uses,
no private Streamlit module is imported, and the README's claims match the code."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from iclebm.ui.guard import guarded

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Streamlit 1.59.0 (July 2026) added the widgets' persist_state; st.components.v2 is older.
STREAMLIT_MIN = (1, 59)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def _requirement(name: str) -> str:
    return next(d for d in PYPROJECT["project"]["dependencies"] if re.match(rf"{name}\b", d))


def _sources() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "iclebm").rglob("*.py"))]


def test_streamlit_lower_bound_has_the_apis_the_app_uses():
    req = _requirement("streamlit")
    assert req.startswith("streamlit>=") and _version(req.split(">=")[1]) == STREAMLIT_MIN
    code = "\n".join(p.read_text() for p in _sources())
    assert "persist_state=" in code and "components.v2" in code  # why the bound is what it is
    assert _version(st.__version__) >= STREAMLIT_MIN
    assert f"Streamlit ≥ {STREAMLIT_MIN[0]}.{STREAMLIT_MIN[1]}" in README


def test_no_private_streamlit_module_is_imported():
    """A private module has no stability promise and pyproject sets no upper bound on Streamlit."""
    bad = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {n}" for n in names
                    if n.startswith("streamlit.") and n.split(".")[1] not in ("components", "testing")]
    assert not bad


def _guarded_script() -> None:
    import streamlit as st

    from iclebm.ui.guard import guarded

    st.session_state["runs"] = st.session_state.get("runs", 0) + 1
    with guarded("panel"):
        if st.session_state["runs"] == 1:
            st.rerun()
        st.stop()
    st.write("after stop")


def test_guarded_lets_streamlit_rerun_and_stop_through():
    """guard.py catches Exception only: st.rerun() and st.stop() (BaseException in Streamlit) pass
    through it, so it needs no private Streamlit module."""
    class Control(BaseException):
        pass

    with pytest.raises(Control), guarded("panel"):
        raise Control
    at = AppTest.from_function(_guarded_script, default_timeout=30).run()
    assert at.session_state["runs"] == 2  # the rerun went through the guard
    assert not at.error and not at.exception and not at.markdown  # and so did the stop


def test_readme_names_the_model_the_app_opens_on(monkeypatch: pytest.MonkeyPatch):
    from iclebm.ui.models import default_path

    monkeypatch.delenv("ICLEBM_CHECKPOINT", raising=False)
    monkeypatch.delenv("ICLEBM_CHECKPOINT_DIR", raising=False)
    opens = re.search(r"`streamlit run app.py` opens the explorer on the shipped generalist \(`([^`]+)`\)",
                      README)
    assert opens and Path(opens.group(1)).name == default_path().name


def test_readme_refresh_period_is_the_code_s():
    tree = ast.parse((ROOT / "iclebm/ui/pages/train.py").read_text())
    value = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", "") == "TRAIN_REFRESH_S")
    assert f"Every {value:g} s (`TRAIN_REFRESH_S`)" in README


def test_readme_links_stay_inside_the_repository():
    """Relative links must resolve in a clone (the paper and notes used to point at ../shared/)."""
    for target in re.findall(r"\]\(([^)#\s]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_readme_tells_how_to_get_the_cpu_torch_build():
    assert "--index-url https://download.pytorch.org/whl/cpu" in README
    assert "CUDA build" in README
    comment = (ROOT / "pyproject.toml").read_text().split('"torch>=')[0].rsplit("dependencies = [", 1)[1]
    assert "CUDA build" in comment and "download.pytorch.org/whl/cpu" in comment

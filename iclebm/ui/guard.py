"""Errors never reach the user as tracebacks; messages queued in callbacks show once on the page."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st

from iclebm.errors import IclebmError


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn any failure inside a panel into an st.error message.

    st.rerun() and st.stop() pass through untouched: Streamlit raises them as BaseException
    subclasses, which `except Exception` does not catch (so no private Streamlit module is needed)."""
    try:
        yield
    except IclebmError as e:
        st.error(f"{what}: {e}")
    except Exception as e:  # noqa: BLE001 - the user must never see a traceback
        st.error(f"{what} failed: {type(e).__name__}: {e}")
        print(traceback.format_exc())  # for the server log, not the page


def last_resort(fn: Callable[[], None]) -> None:
    """Run `fn`; anything it lets through becomes one error message, never a traceback."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - last line of defence: never a traceback on the page
        st.error(f"Something went wrong: {type(e).__name__}: {e}")
        print(traceback.format_exc())


def flash(level: str, text: str) -> None:
    """Queue a message to show once (callbacks run before the page is drawn)."""
    st.session_state.setdefault("flash", []).append((level, text))


def show_flash() -> None:
    """Show the queued messages here; a page calls it where its messages belong."""
    for level, text in st.session_state.pop("flash", []):
        {"error": st.error, "warning": st.warning, "success": st.success}.get(level, st.info)(text)

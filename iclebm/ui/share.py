"""Share links: every page keeps the address bar equal to a link that reopens it as it is.

The page itself is the URL path (st.navigation's url_path; the default page is "/"), its view is
the query string, encoded by the page's property table (`iclebm.ui.page_tables`):

    values = share.restore_once(TABLE)     # the link's values, the first time the page runs
    if values: share.apply(TABLE, values)  # ...into session state (the widgets' keys)
    share.publish(TABLE, share.session_values(TABLE))  # as soon as the state is settled, every run

Publishing right after the state is settled, before the page draws, keeps the address bar from
lagging behind while a slow run is drawing (or is interrupted by the next click or fed point).

The model the page shows travels as `model` (checkpoints on disk only: a model uploaded or trained
in this session cannot be linked to; the sidebar says so next to the share note). A link's
warnings (unreadable points, an unknown view) stay on the page until the user changes something
or dismisses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from iclebm.ui.page_state import Table

MODEL_PARAM = "model"


def _query() -> dict[str, str]:
    return {k: str(v) for k, v in st.query_params.to_dict().items()}


def restore_once(table: Table) -> dict[str, Any] | None:
    """Every property's value from the URL the first time `table.page` runs in this session (the
    link's value where valid, else the default); None on later runs and when the URL is empty. The
    link's warnings are kept to show until the user acts (`show_link_warnings`)."""
    flag = f"_url_restored_{table.page}"
    if st.session_state.get(flag):
        return None
    st.session_state[flag] = True
    params = _query()
    if not params or params == st.session_state.get("_published_query"):
        return None  # nothing, or the address this session wrote itself for another page
    values, warnings = table.decode(params)
    st.session_state[f"_link_warnings_{table.page}"] = warnings
    return values


def apply(table: Table, values: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Put a link's values into session state under the properties' names (the widgets' keys)."""
    for name in table.names():
        if name in values and name not in skip:
            st.session_state[name] = values[name]


def session_values(table: Table, **derived: Any) -> dict[str, Any]:
    """The page's state from session state; `derived` gives the values not kept under their name."""
    ss = st.session_state
    values = {p.name: ss.get(p.name, p.default) for p in table.props}
    values.update(derived)
    return values


def link_model(page: str) -> str | None:
    """The checkpoint a link asks for, read the first time `page` runs (the sidebar applies it)."""
    flag = f"_url_model_read_{page}"
    if st.session_state.get(flag):
        return None
    st.session_state[flag] = True
    if _query() == st.session_state.get("_published_query"):
        return None  # the address this session wrote itself for another page
    return st.query_params.get(MODEL_PARAM) or None


def set_model(option: str | None) -> None:
    """Record the model this page shows, for its link (the sidebar calls it every run)."""
    kind, _, name = (option or "").partition(":")
    st.session_state["_share_model"] = name if kind == "file" and name else None


def publish(table: Table, values: Mapping[str, Any]) -> None:
    """Make the address bar hold the page's state plus its model, and nothing else. The first
    state published after a link was opened is remembered: any later change clears its warnings."""
    query = table.encode(values)
    model = st.session_state.get("_share_model")
    if model:
        query[MODEL_PARAM] = model
    ss = st.session_state
    seen = f"_link_state_{table.page}"
    if seen not in ss:
        ss[seen] = query
    elif ss[seen] != query:
        ss[seen] = query
        ss.pop(f"_link_warnings_{table.page}", None)  # the user acted: the link's view is gone
    ss["_published_query"] = query
    if query != _query():
        st.query_params.from_dict(query)


def _dismiss(page: str) -> None:
    st.session_state.pop(f"_link_warnings_{page}", None)


def show_link_warnings(page: str) -> None:
    """The warnings of the link this page was opened with, on every run until the user acts."""
    warnings = st.session_state.get(f"_link_warnings_{page}") or []
    if not warnings:
        return
    for w in warnings:
        st.warning(w)
    st.button("Dismiss the link's warnings", key=f"_dismiss_link_{page}", on_click=_dismiss, args=(page,))

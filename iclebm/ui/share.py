"""Share links: every page keeps the address bar equal to a link that reopens it as it is.

The page itself is the URL path (st.navigation's url_path; the default page is "/"), its
view is the query string. A page's state object encodes to flat str -> str parameters
(pure code in `iclebm.ui.state`); here they meet `st.query_params`:

    params = share.restore_once("train")   # the link's parameters, the first time the page runs
    ...apply them to the page's session state, then draw the page...
    share.publish(state.to_query())        # every run: the address bar follows the page

The selected model is shared by all pages; `publish` adds it as `model` (checkpoints on
disk only: a model that lives in one browser session cannot be linked to).
"""

from __future__ import annotations

import streamlit as st

MODEL_PARAM = "model"


def restore_once(page: str) -> dict[str, str]:
    """The URL's query parameters the first time `page` runs in this session, else {}."""
    flag = f"_url_restored_{page}"
    if st.session_state.get(flag):
        return {}
    st.session_state[flag] = True
    return st.query_params.to_dict()


def link_model() -> str | None:
    """The checkpoint a link asks for, read once per session (the sidebar applies it)."""
    if st.session_state.get("_url_model_read"):
        return None
    st.session_state["_url_model_read"] = True
    return st.query_params.get(MODEL_PARAM) or None


def set_model(option: str | None) -> None:
    """Record the selected model for the links (the sidebar calls it every run)."""
    kind, _, name = (option or "").partition(":")
    st.session_state["_share_model"] = name if kind == "file" and name else None


def publish(params: dict[str, str]) -> None:
    """Make the address bar hold `params` plus the shared model, and nothing else."""
    query = dict(params)
    model = st.session_state.get("_share_model")
    if model:
        query[MODEL_PARAM] = model
    if query != st.query_params.to_dict():
        st.query_params.from_dict(query)

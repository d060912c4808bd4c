"""Pages and navigation: how app.py turns its PAGES list into st.navigation.

A page is a module with `render(ctx: AppContext) -> None`; `Page(module, title, icon,
url_path)` registers it. Every page gets the same wrapper: when no model loads it shows
the missing-model message instead, errors become messages (never tracebacks), and
messages queued for the page that it did not show itself appear at its end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

import streamlit as st
import torch

from iclebm.ui.context import init_context
from iclebm.ui.guard import guarded, last_resort, show_flash
from iclebm.ui.models import AppContext
from iclebm.ui.sidebar import missing_model_page

_CTX_KEY = "_app_context"


@dataclass(frozen=True)
class Page:
    """One entry of the navigation: a module with render(ctx), its title, icon and URL path."""

    module: ModuleType
    title: str
    icon: str
    url_path: str

    def st_page(self, default: bool = False) -> st.Page:
        if not callable(getattr(self.module, "render", None)):
            raise TypeError(f"page module {self.module.__name__} has no render(ctx) function")

        def run() -> None:
            ctx: AppContext | None = st.session_state.get(_CTX_KEY)
            if ctx is None:
                missing_model_page()
                return
            with guarded(f"The {self.title} page"):
                self.module.render(ctx)
            show_flash()

        run.__name__ = f"page_{self.url_path}"
        return st.Page(run, title=self.title, icon=self.icon, url_path=self.url_path, default=default)


def setup_session() -> None:
    """Once per session: torch threads; every run: the shared context's defaults."""
    # One intra-op thread: the UI and a live-training thread then each get a core on a
    # 2-core machine; two oversubscribed OpenMP pools spin and slow both down several-fold.
    if not st.session_state.get("_threads_set"):
        torch.set_num_threads(int(os.environ.get("ICLEBM_TORCH_THREADS", "1")))
        st.session_state["_threads_set"] = True
    init_context()


def navigation(pages: list[Page]) -> st.navigation:  # type: ignore[valid-type]
    """st.navigation over `pages`, in order, in the top bar; the first opens at "/"."""
    if len({p.url_path for p in pages}) != len(pages):
        raise ValueError("two pages share a url_path")
    return st.navigation([p.st_page(default=i == 0) for i, p in enumerate(pages)], position="top")


def run(page: st.Page, ctx: AppContext | None) -> None:
    """Run the selected page with the sidebar's model context."""
    st.session_state[_CTX_KEY] = ctx
    last_resort(page.run)

"""The Streamlit app, organised as pages (`streamlit run app.py`).

    app.py                    the table of contents: page config, the PAGES list, navigation, sidebar
    ui/pages/density.py       Density: click points, the landscape, film strip, sampler, ICL curve
    ui/pages/inside.py        Inside: attention, influence, contexts-to-weights
    ui/pages/regression.py    Regression: E(y | x, D) per column, thinking, Bayes band, random tasks
    ui/pages/train.py         Train: live training, saving and the checkpoints on disk
    ui/jobs/trainer_process.py  the Train page's trainers: one niced child process per session, capped
    ui/jobs/live_settings.py  live-training settings: bounds, defaults, configs
    ui/jobs/finetune.py       the Inside page's background fine-tune (a daemon thread)
    ui/sidebar.py             model selector, model card, upload (the same on every page)
    ui/navigation.py          Page(module, title, icon, url_path) -> st.navigation, the page wrapper
    ui/models.py              AppContext (model, key, box, ...), checkpoints, session models
    ui/context.py             the context points shared by the pages (and the mixture they came from)
    ui/point_editor.py        PointEditor: clicks, undo/clear, points table, feeding (Density, Regression)
    ui/page_state.py          page state as a property table (name, kind, default, bounds, URL key) ->
                              defaults, the share-link codec and its validation (pure; unit-tested)
    ui/page_tables.py         the four pages' property tables
    ui/share.py               URL query <-> session state through a page's table; the page's `model`
    ui/state.py               pure state updates: context edits, clicks, the points table (unit-tested)
    ui/compute.py             memoised library calls (landscapes, film strips, true densities)
    ui/figures.py             Plotly figure builders (arrays in, figures out); inside_figures.py and
                              regression_figures.py for those pages
    ui/canvas.py              the clickable Plotly canvas component
    ui/guard.py               guarded(...) panels and flash messages: never a traceback
    ui/app_server.py          `streamlit run app.py` on a free port (browser tests, docs/screenshots.py)

Adding a page: write `iclebm/ui/pages/NAME.py` with `render(ctx: AppContext) -> None`
(draw with st.*, numbers from the library via `compute`/`iclebm.*`, wrap panels in
`guarded`), then add one line to PAGES in app.py. To make its view shareable, give it a property
table in `ui/page_tables.py`, restore it with `share.restore_once(TABLE)` / `share.apply` and
publish it each run, as soon as the state is settled, with `share.publish(TABLE, values)`.
Give every widget a key prefixed by the page (e.g. "ins_") and `persist_state="session"`
so its value survives a visit to another page.
"""

from iclebm.ui.models import AppContext
from iclebm.ui.navigation import Page, navigation, run, setup_session

__all__ = ["AppContext", "Page", "navigation", "run", "setup_session"]

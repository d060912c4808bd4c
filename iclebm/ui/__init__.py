"""The Streamlit app, organised as pages (`streamlit run app.py`).

    app.py               the table of contents: page config, the PAGES list, navigation, sidebar
    ui/pages/density.py  Density: click points, the landscape, film strip, sampler, ICL curve
    ui/pages/train.py    Train: live training, saving and the checkpoints on disk
    ui/sidebar.py        model selector, model card, upload (the same on every page)
    ui/navigation.py     Page(module, title, icon, url_path) -> st.navigation, the page wrapper
    ui/models.py         AppContext (model, key, box, ...), checkpoints, session models
    ui/context.py        the context points shared by the pages
    ui/point_editor.py   PointEditor: clicks, undo/clear, points table, feeding (Density, Regression)
    ui/share.py          URL query <-> page state (share links), `model` shared by all pages
    ui/state.py          pure state updates and URL encodings (no Streamlit; unit-tested)
    ui/compute.py        memoised library calls (landscapes, film strips)
    ui/figures.py        Plotly figure builders (arrays in, figures out)
    ui/canvas.py         the clickable Plotly canvas component
    ui/guard.py          guarded(...) panels and flash messages: never a traceback
    ui/live_training.py  training settings (bounds, defaults) and the in-process thread trainer
    ui/trainer_process.py  the Train page's trainers: one niced child process per session, capped
    ui/app_server.py     `streamlit run app.py` on a free port (browser tests, docs/screenshots.py)

Adding a page: write `iclebm/ui/pages/NAME.py` with `render(ctx: AppContext) -> None`
(draw with st.*, numbers from the library via `compute`/`iclebm.*`, wrap panels in
`guarded`), then add one line to PAGES in app.py. To make its view shareable, restore it
with `share.restore_once("NAME")` and write it each run with `share.publish(params)`.
Give every widget a key prefixed by the page (e.g. "ins_") and `persist_state="session"`
so its value survives a visit to another page.
"""

from iclebm.ui.models import AppContext
from iclebm.ui.navigation import Page, navigation, run, setup_session

__all__ = ["AppContext", "Page", "navigation", "run", "setup_session"]

"""iclebm explorer: a frozen transformer reads your points as context and draws the energy
landscape E(x | context); the pages below explore it.

    streamlit run app.py

This file is the table of contents. The pages live in `iclebm/ui/pages/` (one module each,
with `render(ctx)`); the shared sidebar, state and figures in `iclebm/ui/`.
"""

import streamlit as st

from iclebm import ui
from iclebm.ui import sidebar
from iclebm.ui.pages import bayesian, density, inside, regression, train

st.set_page_config(page_title="iclebm explorer", page_icon="⚡", layout="wide")

# The navigation, in this order; the first page opens at "/". To add a page, write
# iclebm/ui/pages/NAME.py with render(ctx) and add one line: ui.Page(module, title, icon, url_path).
# Order: the explorers of the density model first (Density, Inside, Bayesian?), other task
# families next (Regression), Train last.
PAGES = [
    ui.Page(density, "Density", ":material/blur_on:", "density"),
    ui.Page(inside, "Inside", ":material/visibility:", "inside"),
    ui.Page(bayesian, "Bayesian?", ":material/balance:", "bayesian"),
    ui.Page(regression, "Regression", ":material/show_chart:", "regression"),
    ui.Page(train, "Train", ":material/model_training:", "train"),
]

ui.setup_session()
page = ui.navigation(PAGES)  # st.navigation in the top bar; the page is the URL path
ctx = sidebar.render(page.url_path)  # model selector (of the page's family), card, upload
ui.run(page, ctx)

"""Figures and animations of a model on your points, to files (matplotlib): `python -m iclebm render`
and `iclebm.render_figure`."""

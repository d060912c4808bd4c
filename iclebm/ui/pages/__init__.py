"""One module per page of the app, each with `render(ctx: AppContext) -> None`; app.py lists them."""

"""A text-processing FastAPI app that embeds the cachewarden engine (see app.py)."""

"""The HTTP server: `create_app(engine, keystore, settings)` in `app.py` assembles the routes of
docs/api.md (`routes_jobs.py`, `routes_keys.py`), the auth guard, the one error table
(`errors.py`), body validation, the /events stream, metrics, the OpenAPI document and the
dashboard's routes."""

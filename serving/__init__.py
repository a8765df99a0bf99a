"""Serving plane: the FastAPI scoring service (app.py routes, service.py the request
path), online features, model loading and hot swap, canary routing, shadow scoring and
the prediction log that the monitoring plane reads."""

import features  # noqa: F401  (first: Feast's import-time instrumentation, see there)

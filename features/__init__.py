"""Feature plane: the Feast repository (features/repo), the batch feature pipeline and
the request-time transforms shared by training and serving.

Importing this package first turns off Feast's import-time type instrumentation in
this process (`skip_feast_type_instrumentation`); `serving` and `monitoring`, whose
modules import Feast directly, import it before anything else for the same reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def skip_feast_type_instrumentation() -> None:
    """Feast decorates its definition classes (FeatureView, Entity, DataSource and
    their kin) with typeguard's `@typechecked`, which at import re-reads each class's
    source, rewrites it with a check on every argument and compiles it again: 2.4 s of
    the scoring API's 5.6 s of imports here, paid by every API, stream worker and
    monitor process at start, and a check on every later call. The checks guard
    definitions a user writes; ours are fixed code, built and applied under test. So
    before Feast is first imported, the decorator Feast reads becomes a pass-through.
    Feast's own CLI (`feast ...`) imports nothing of ours and keeps its checks. Too
    late once Feast is loaded (its classes are decorated at import): then a no-op."""
    import sys

    if "feast" in sys.modules:
        return
    import typeguard

    def pass_through(target: Any = None, **_options: Any) -> Any:
        if target is None:  # used as @typechecked(...): a decorator that changes nothing
            return _unchanged
        return target

    typeguard.typechecked = pass_through


def _unchanged(target: Callable[..., Any]) -> Callable[..., Any]:
    return target


skip_feast_type_instrumentation()

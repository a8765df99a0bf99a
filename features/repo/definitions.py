"""What the `feast` CLI scans in this repository: the objects of features/definitions.py,
over the feature tables of the embedded default home (`.fraudlab/` at the checkout's
root, where `make demo` writes them), the home `feature_store.yaml` names too.

A thin shim: fraudlab's own code never imports it; it calls `features.definitions.define`
with the home its settings name.
"""

from pathlib import Path

from features.definitions import customer, define, terminal

# features/repo -> the checkout's root; the embedded profile's home is `.fraudlab` there.
_DEFAULT_HOME = Path(__file__).resolve().parents[2] / ".fraudlab"
_definitions = define(_DEFAULT_HOME / "feature_data")

# Module-level names are what the CLI finds: every view and service, by its own name.
globals().update(_definitions.views)
globals().update(_definitions.services)
__all__ = ["customer", "terminal", *_definitions.views, *_definitions.services]

"""The file a registered version is scored from, and the one safe way to read it.

A version's model is a LightGBM text model (`model.lgb`) or an sklearn pipeline in
skops format (`model.skops`): reading either runs no code, unlike a pickle. The reader
follows from the file that is there, never from a tag anyone with registry access can
edit, and the file's SHA-256, recorded as a tag when the version is registered, must
match before a byte of it is parsed: a replaced or edited artifact is refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import pandas as pd
from mlflow.models import Model
from sklearn.pipeline import Pipeline

from fraudlab.errors import ModelUnavailable

Flavor = Literal["lightgbm", "sklearn"]
MODEL_FILES: dict[Flavor, str] = {"lightgbm": "model.lgb", "sklearn": "model.skops"}
# skops trusts scikit-learn's and NumPy's own types; our pipeline also holds dtypes.
SKOPS_TRUSTED = ["numpy.dtype"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_file(model_dir: Path) -> tuple[Flavor, Path]:
    """The one model file of a downloaded version folder, and its flavor."""
    found = [
        (f, model_dir / name) for f, name in MODEL_FILES.items() if (model_dir / name).is_file()
    ]
    if len(found) != 1:
        names = " or ".join(MODEL_FILES.values())
        raise ModelUnavailable(
            f"{model_dir.name} holds no single {names} (a pickled model is never loaded)"
        )
    return found[0]


def read_model(model_dir: Path, flavor: Flavor, expected_sha256: str) -> Pipeline | lgb.Booster:
    found, path = model_file(model_dir)
    if found != flavor:
        raise ModelUnavailable(f"its tags say {flavor} but its artifact is {path.name}")
    if not expected_sha256:
        raise ModelUnavailable("no artifact digest was recorded at registration: register it again")
    actual = sha256(path)
    if actual != expected_sha256:
        raise ModelUnavailable(
            f"{path.name} does not match the digest recorded at registration "
            f"({actual[:12]}… != {expected_sha256[:12]}…): the artifact was changed"
        )
    if flavor == "lightgbm":
        return lgb.Booster(model_file=str(path))
    # Imported here: skops walks scikit-learn's modules for its trusted types on import
    # (a second of every API start), and a LightGBM champion never needs it.
    import skops.io

    return skops.io.load(path, trusted=SKOPS_TRUSTED)


def read_input_example(model_dir: Path) -> pd.DataFrame | None:
    """The rows logged with the version (JSON, as MLflow writes them), for a load probe."""
    example = Model.load(model_dir).load_input_example(str(model_dir))
    return example if isinstance(example, pd.DataFrame) else None

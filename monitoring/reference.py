"""The reference sample a model version was trained on, read back from MLflow.

pipelines/train.py logs `reference/reference_sample.parquet` on every training run:
a sample of the training features plus the model's own `score` on them. The drift job
compares live traffic against the sample of the version that is deciding now.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException

from fraudlab.errors import MissingInput
from fraudlab.settings import Settings
from pipelines.registry import CHAMPION, connect
from pipelines.train import REFERENCE_SAMPLE

REFERENCE_ARTIFACT = f"reference/{REFERENCE_SAMPLE}"


def load_reference(settings: Settings, alias: str = CHAMPION) -> tuple[str, pd.DataFrame]:
    """(version, reference sample) of the model version behind `alias`."""
    client = connect(settings)
    name = settings.training.model_name
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise MissingInput(
            f"no {name!r} version carries the alias {alias!r}: train and register one first"
        ) from exc
    if not version.run_id:
        raise MissingInput(f"{name} v{version.version} has no training run to read from")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(version.run_id, REFERENCE_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise MissingInput(
                f"{name} v{version.version} (run {version.run_id}) has no {REFERENCE_ARTIFACT}: "
                "retrain it with this version of `fraudlab train`"
            ) from exc
        sample = pd.read_parquet(Path(path))
    return str(version.version), sample

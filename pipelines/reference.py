"""The reference sample of a model version: what its drift jobs compare live traffic
against. Training logs it with the run (`reference/reference_sample.parquet`: held-out
features plus the model's own `score` on them); the monitor reads it back for the
version behind an alias. One owner of its name, its making and its reading.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from fraudlab.errors import MissingInput
from fraudlab.settings import Settings
from pipelines.models import Model, feature_matrix, score
from pipelines.registry import CHAMPION, VersionTags, connect

REFERENCE_FOLDER = "reference"  # under the training run's artifacts
REFERENCE_FILE = "reference_sample.parquet"
REFERENCE_ARTIFACT = f"{REFERENCE_FOLDER}/{REFERENCE_FILE}"
SCORE = "score"


@dataclass(frozen=True)
class ReferenceSample:
    version: str
    tags: VersionTags  # the version's own: its features and feature service
    frame: pd.DataFrame  # its features, in its order, plus `score`

    @property
    def features(self) -> list[str]:
        return self.tags.features


def log_reference_sample(
    model: Model, held_out: pd.DataFrame, features: list[str], rows: int
) -> None:
    """Log the sample in the active run.

    Taken from the held-out periods (validation and test), not the training rows: a
    model's scores on the rows it was fitted to are not what it will produce on new
    traffic, and the most recent period is the closest to what serving sees next.
    """
    sample = held_out.sample(n=min(rows, len(held_out)), random_state=0)[features].copy()
    sample[SCORE] = score(model, feature_matrix(sample, features))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / REFERENCE_FILE
        sample.reset_index(drop=True).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=REFERENCE_FOLDER)


def load_reference(
    settings: Settings, alias: str = CHAMPION, version_number: str | None = None
) -> ReferenceSample:
    """The reference sample of the version behind `alias` (or of `version_number`)."""
    client = connect(settings)
    name = settings.training.model_name
    try:
        if version_number is not None:
            version = client.get_model_version(name, version_number)
        else:
            version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        which = f"version {version_number}" if version_number else f"the alias {alias!r}"
        raise MissingInput(
            f"no {name!r} version matches {which}: train and register one first"
        ) from exc
    if not version.run_id:
        raise MissingInput(f"{name} v{version.version} has no training run to read from")
    tags = VersionTags.from_tags(str(version.version), dict(version.tags))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(version.run_id, REFERENCE_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise MissingInput(
                f"{name} v{version.version} (run {version.run_id}) has no {REFERENCE_ARTIFACT}: "
                "retrain it with this version of `fraudlab train`"
            ) from exc
        frame = pd.read_parquet(Path(path))
    return ReferenceSample(str(version.version), tags, frame)

"""Run uvicorn on a scoring-app factory once the file $TEST_GO_FILE exists.

Importing MLflow, Feast and LightGBM takes most of a server's startup; a test session
launches its servers first, so those imports overlap the training of the models the
servers will load, and then touches the go file. Usage:
    python -m tests.serving.launch_server serving.app:create_app 8123
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import mlflow.lightgbm
import mlflow.sklearn  # noqa: F401
import uvicorn

import serving.app  # noqa: F401


def main() -> None:
    factory, port = sys.argv[1], int(sys.argv[2])
    go = Path(os.environ["TEST_GO_FILE"])
    while not go.exists():
        time.sleep(0.05)
    uvicorn.run(factory, factory=True, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

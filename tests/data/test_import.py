"""`fraudlab data import`: a table with its own column names and no label times becomes
the home's transactions (the worked example of docs/own-data.md), and every way to get
it wrong is one clear line that writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from fraudlab.cli import app
from fraudlab.settings import get_settings

runner = CliRunner()
SMALL = ["--customers", "100", "--terminals", "200", "--days", "10", "--seed", "1"]
# Their names for our columns, as another simulator writes them.
THEIRS = {
    "TRANSACTION_ID": "transaction_id",
    "TX_DATETIME": "event_timestamp",
    "CUSTOMER_ID": "customer_id",
    "TERMINAL_ID": "terminal_id",
    "TX_AMOUNT": "amount",
    "TX_FRAUD": "is_fraud",
}
MAPS = [arg for theirs, ours in THEIRS.items() for arg in ("--map", f"{theirs}={ours}")]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FRAUDLAB_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("generated") / "tx.parquet"
    generated = runner.invoke(app, ["data", "generate", *SMALL, "--out", str(out)])
    assert generated.exit_code == 0, generated.output
    return pd.read_parquet(out)


def their_csv(ours: pd.DataFrame, path: Path) -> Path:
    """Our simulated payments as another system exports them: its own column names,
    text times without a zone, a column of its own, and no label times."""
    theirs = ours.rename(columns={v: k for k, v in THEIRS.items()})[list(THEIRS)]
    theirs["TX_DATETIME"] = ours["event_timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    theirs["TX_TIME_SECONDS"] = range(len(theirs))
    theirs.to_csv(path, index=False)
    return path


def imported(*args: str) -> Result:
    result = runner.invoke(app, ["data", "import", *args])
    assert "Traceback" not in result.output
    return result


def test_their_csv_becomes_the_homes_table_with_label_times_from_the_delay(
    home: Path, ours: pd.DataFrame, tmp_path: Path
) -> None:
    source = their_csv(ours, tmp_path / "theirs.csv")
    result = imported(str(source), *MAPS, "--label-delay-days", "7")
    assert result.exit_code == 0, result.output
    assert "TX_TIME_SECONDS" in result.output  # left out, and said so
    table = pd.read_parquet(home / "data" / "transactions.parquet")
    columns = ["transaction_id", "customer_id", "terminal_id", "amount", "is_fraud"]
    pd.testing.assert_frame_equal(table[columns], ours[columns])
    assert (table["event_timestamp"] == ours["event_timestamp"]).all()
    delay = table["label_available_at"] - table["event_timestamp"]
    assert (delay == pd.Timedelta(days=7)).all()
    validated = runner.invoke(
        app, ["data", "validate", str(home / "data" / "transactions.parquet")]
    )
    assert validated.exit_code == 0, validated.output
    built = runner.invoke(app, ["features", "build"])  # the next step takes it as it is
    assert built.exit_code == 0, built.output


def test_a_table_with_its_own_label_times_keeps_them(
    home: Path, ours: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "theirs.parquet"
    ours.rename(columns={"label_available_at": "CHARGEBACK_AT"}).to_parquet(source)
    result = imported(str(source), "--map", "CHARGEBACK_AT=label_available_at")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(home / "data" / "transactions.parquet")
    pd.testing.assert_frame_equal(table, ours, check_dtype=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "TX_AMOUNT"], "write THEIRS=OURS"),
        (["--map", "=amount"], "write THEIRS=OURS"),
        (["--map", "TX_AMOUNT=amt"], "'amt' is not a column of ours"),
        (["--map", "TX_AMOUNT=amount", "--map", "TX_FRAUD=amount"], "two columns to 'amount'"),
        (["--map", "TX_AMOUNT=amount", "--map", "TX_AMOUNT=is_fraud"], "'TX_AMOUNT' twice"),
        (["--map", "TX_AMONT=amount"], "'TX_AMONT', not a column of"),
        (["--label-delay-days", "nan"], "--label-delay-days"),
        (["--label-delay-days", "-1"], "--label-delay-days"),
        (["--label-delay-days", "1e9"], "at most 365"),
        ([], "has no label_available_at"),  # and no delay to derive it from
    ],
)
def test_a_wrong_import_is_one_clear_line_and_writes_nothing(
    home: Path, ours: pd.DataFrame, tmp_path: Path, args: list[str], message: str
) -> None:
    result = imported(str(their_csv(ours, tmp_path / "theirs.csv")), *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not home.exists() or not any((home / "data").glob("*"))


def test_a_bad_row_leaves_the_homes_table_as_it_was(
    home: Path, ours: pd.DataFrame, tmp_path: Path
) -> None:
    first = imported(
        str(their_csv(ours, tmp_path / "theirs.csv")), *MAPS, "--label-delay-days", "7"
    )
    assert first.exit_code == 0, first.output
    table = home / "data" / "transactions.parquet"
    before = table.read_bytes()
    broken = ours.copy()
    broken.loc[3, "amount"] = -5.0
    result = imported(
        str(their_csv(broken, tmp_path / "broken.csv")), *MAPS, "--label-delay-days", "1"
    )
    assert result.exit_code == 2
    assert "amount: 1 row(s) are <= 0" in result.output
    assert table.read_bytes() == before
    assert sorted(p.name for p in table.parent.iterdir()) == ["transactions.parquet"]

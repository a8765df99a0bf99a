"""docs/scenarios/README.md is rebuilt from every published summary at each publish,
so it must read summaries written before a field existed (a story republished one at
a time meets the others' older summaries)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from scenarios.report import write_index

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "scenarios" / "summaries"


def test_the_index_reads_a_summary_from_before_the_minute_jobs(tmp_path: Path) -> None:
    shutil.copytree(PUBLISHED, tmp_path / "summaries")
    old = tmp_path / "summaries" / "skew-amount-units.json"
    summary = json.loads(old.read_text())
    for field in ("minute_job_runs", "time_to_mitigate_hours", "mitigated_at"):
        summary.pop(field, None)
    old.write_text(json.dumps(summary))

    index = write_index(tmp_path).read_text()

    row = next(line for line in index.splitlines() if line.startswith("| [skew-amount-units]"))
    assert "minute-job runs" not in row and "breaker after" not in row
    rows = [line for line in index.splitlines() if line.startswith("| [")]
    assert len(rows) == len(list(PUBLISHED.glob("*.json")))
    assert any("minute-job runs" in line for line in rows)  # the newer summaries keep it

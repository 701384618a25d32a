"""The shared fold of ``report.generated``: the newest report of each version stands."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Stamp
from cvops.contracts.registry import ModelStageChanged
from cvops.contracts.reporting import MissingSection, ReportGenerated
from cvops.core import dump_rows, sqlite_engine
from cvops.core.reports import Reports

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="reporter", correlation_id="c")


def _report(last_seq: int, model: str = "cnn", version: int = 1) -> ReportGenerated:
    def ref(kind: str) -> ArtifactRef:
        return ArtifactRef(sha256=f"{last_seq:02x}{kind}".ljust(64, "0")[:64], size=3)

    return ReportGenerated(
        **STAMP.envelope(f"{model}:{version}@{last_seq}"),
        model_name=model,
        version=version,
        html=ref("a"),
        pdf=ref("b"),
        data=ref("c"),
        charts={"latency": ref("d")},
        sections=["dataset"],
        missing=[MissingSection(section="benchmark", reason="no benchmark yet")],
        last_seq=last_seq,
    )


def test_the_report_reflecting_the_most_of_the_log_stands_whatever_the_order(
    tmp_path: Path,
) -> None:
    metadata = MetaData()
    reports = Reports(metadata)
    engine = sqlite_engine(tmp_path / "r.sqlite")
    metadata.create_all(engine)
    older, newer, other = _report(10), _report(20), _report(5, version=2)
    rows = []
    for _ in range(2):  # the same events twice leave the same rows
        with Session(engine) as s, s.begin():
            for seq, event in enumerate((older, newer, other, older), start=100):
                assert reports.apply(s, event, seq)
        rows.append(dump_rows(engine, metadata))
    assert rows[0] == rows[1] and len(rows[0]["reports"]) == 2
    with Session(engine) as s:
        assert reports.latest(s, "cnn", 1) == newer  # the late older report did not win
        assert reports.latest(s, "cnn", 2) == other
        assert reports.latest(s, "cnn", 3) is None
        assert reports.latest(s, "other", 1) is None


def test_other_events_are_not_reports(tmp_path: Path) -> None:
    metadata = MetaData()
    reports = Reports(metadata)
    engine = sqlite_engine(tmp_path / "r.sqlite")
    metadata.create_all(engine)
    staged = ModelStageChanged(
        **STAMP.envelope("stage"), model_name="cnn", version=1, stage="staging"
    )
    with Session(engine) as s, s.begin():
        assert not reports.apply(s, staged, 1)
    assert dump_rows(engine, metadata)["reports"] == []

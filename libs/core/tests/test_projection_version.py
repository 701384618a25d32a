"""A projection whose table layout changed is rebuilt from the log, with no upgrade step."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core.projection import open_projection_file


class _Names:
    """A projection with one table; ``version`` names its layout."""

    name = "names"

    def __init__(self, version: int, column: str) -> None:
        self.version = version
        self.metadata = MetaData()
        self.table = Table(
            "names", self.metadata, Column("id", Integer, primary_key=True), Column(column, String)
        )

    def apply(self, session: Session, event: Event, seq: int) -> None:
        raise NotImplementedError


def test_a_file_of_another_layout_version_is_replaced_and_the_same_version_kept(
    tmp_path: Path,
) -> None:
    db = tmp_path / "svc.sqlite"
    old = _Names(0, "name")
    engine = open_projection_file(db, old)
    with engine.begin() as conn:
        conn.execute(old.table.insert().values(id=1, name="kept"))
    engine.dispose()

    same = open_projection_file(db, _Names(0, "name"))  # the same layout: rows stay
    with same.connect() as conn:
        assert conn.execute(select(old.table.c.name)).scalars().all() == ["kept"]
    same.dispose()

    new = _Names(1, "title")  # a new layout: the file starts empty, to be replayed
    engine = open_projection_file(db, new)
    with engine.connect() as conn:
        assert conn.execute(select(new.table)).all() == []
        assert conn.exec_driver_sql("PRAGMA user_version").scalar_one() == 1
        columns = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(names)")]
    assert columns == ["id", "title"]
    engine.dispose()

"""Model-version reports as services see them: the newest ``report.generated`` of each version.

The reporter keeps this table to know which reports are current, the gateway to serve them;
both fold ``report.generated`` the same way, here: the report that reflects the most of the
log (``last_seq``) stands, so two reporter instances racing, a redelivery or a rebuild leave
the same row.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.reporting import ReportGenerated

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ReportGenerated).decode


class Reports:
    """The ``reports`` table inside a service's own ``metadata``, its fold and its query."""

    def __init__(self, metadata: MetaData) -> None:
        self.table = Table(
            "reports",
            metadata,
            Column("model_name", String, primary_key=True),
            Column("version", Integer, primary_key=True),
            Column("last_seq", Integer, nullable=False),  # the log the report reflects
            Column("seq", Integer, nullable=False),  # where its report.generated is
            Column("body", Text, nullable=False),  # the ReportGenerated event as JSON
        )

    def apply(self, session: Session, event: Event, seq: int) -> bool:
        """Keep ``event`` if it is a report newer (by ``last_seq``) than the version's stored
        one; False for other events."""
        if not isinstance(event, ReportGenerated):
            return False
        stmt = insert(self.table).values(
            model_name=event.model_name,
            version=event.version,
            last_seq=event.last_seq,
            seq=seq,
            body=_encode(event).decode(),
        )
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["model_name", "version"],
                set_={
                    "last_seq": stmt.excluded.last_seq,
                    "seq": stmt.excluded.seq,
                    "body": stmt.excluded.body,
                },
                where=self.table.c.last_seq < stmt.excluded.last_seq,
            )
        )
        return True

    def latest(self, session: Session, model_name: str, version: int) -> ReportGenerated | None:
        """The newest report of a version (None: none generated yet)."""
        body = session.execute(
            select(self.table.c.body).where(
                self.table.c.model_name == model_name, self.table.c.version == version
            )
        ).scalar_one_or_none()
        return None if body is None else _decode(body)

"""cvops-core: bus, event log, projection runner, aggregate tables and writer, artifacts,
leases, settings, logging."""

from cvops.core.aggregates import (
    Aggregates,
    AggregateTable,
    Appended,
    Children,
    append_guarded,
    write_aggregate,
)
from cvops.core.artifacts import ArtifactStore, SpooledUpload, TooLarge
from cvops.core.bus import (
    ALL_EVENTS,
    ALL_SECRETS,
    IDENTITY_STREAM,
    STREAM,
    Bus,
    ConcurrencyConflict,
    Published,
    ShuttingDown,
    WorkConsumer,
    stream_of,
)
from cvops.core.logging import configure_logging, get_logger
from cvops.core.projection import (
    Projection,
    ProjectionRunner,
    dump_rows,
    rebuild_projection,
    sqlite_engine,
)
from cvops.core.runtime import run_service
from cvops.core.settings import Settings, load_settings

__all__ = [
    "ALL_EVENTS",
    "ALL_SECRETS",
    "IDENTITY_STREAM",
    "STREAM",
    "AggregateTable",
    "Aggregates",
    "Appended",
    "ArtifactStore",
    "Bus",
    "Children",
    "ConcurrencyConflict",
    "Projection",
    "ProjectionRunner",
    "Published",
    "Settings",
    "ShuttingDown",
    "SpooledUpload",
    "TooLarge",
    "WorkConsumer",
    "append_guarded",
    "configure_logging",
    "dump_rows",
    "get_logger",
    "load_settings",
    "rebuild_projection",
    "run_service",
    "sqlite_engine",
    "stream_of",
    "write_aggregate",
]

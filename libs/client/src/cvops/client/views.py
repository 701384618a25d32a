"""Rich tables of the gateway's structs, for people (scripts use ``--json``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cvops.contracts.api import (
    DatasetView,
    ModelVersionView,
    ModelView,
    TokenView,
    UploadResult,
    UserView,
)
from cvops.contracts.common import TensorSpec

_ENVELOPE = {"type", "event_id", "occurred_at", "actor", "correlation_id", "causation_id"}


def when(value: datetime | None, *, seconds: bool = False) -> str:
    """A timestamp in the local zone: to the minute in tables, to the second in details."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def size(n: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def tensors(specs: Iterable[TensorSpec]) -> str:
    """``input float32[-1,3,32,32]`` per tensor, one per line."""
    return "\n".join(f"{t.name} {t.dtype}[{','.join(map(str, t.shape))}]" for t in specs) or "-"


def _table(*columns: str, title: str | None = None, wrap: tuple[str, ...] = ()) -> Table:
    """Columns stay on one line unless named in ``wrap`` (the long free-text ones)."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        folds = column in wrap
        table.add_column(column, no_wrap=not folds, overflow="fold" if folds else "ellipsis")
    return table


def _row(table: Table, *cells: object) -> None:
    # Text() so that names a user typed are never read as rich markup.
    table.add_row(*(Text(str(c)) for c in cells))


def fields(rows: Iterable[tuple[str, object]], title: str | None = None) -> Table:
    table = Table.grid(padding=(0, 2))
    table.title = title
    table.title_justify = "left"
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(Text(key), Text(str(value)))
    return table


def users_table(users: list[UserView]) -> Table:
    table = _table("USERNAME", "ROLE", "CREATED", "STATUS")
    for u in users:
        _row(table, u.username, u.role, when(u.created_at), "disabled" if u.disabled else "active")
    return table


def user_fields(user: UserView, url: str) -> Table:
    return fields(
        [
            ("username", user.username),
            ("role", user.role),
            ("created", when(user.created_at, seconds=True)),
            ("status", "disabled" if user.disabled else "active"),
            ("gateway", url),
        ]
    )


def tokens_table(tokens: list[TokenView]) -> Table:
    table = _table("ID", "LABEL", "CREATED", "STATUS", wrap=("LABEL",))
    for t in tokens:
        _row(
            table,
            t.token_id,
            t.label or "-",
            when(t.created_at),
            "revoked" if t.revoked else "active",
        )
    return table


def models_table(models: list[ModelView]) -> Table:
    table = _table("NAME", "LATEST", "VERSIONS", "OWNER", "CREATED")
    for m in models:
        latest = "-" if m.latest_version is None else f"v{m.latest_version}"
        versions = len(m.versions) if m.versions else (m.latest_version or 0)
        _row(table, m.name, latest, versions, m.owner, when(m.created_at))
    return table


def versions_table(versions: list[ModelVersionView], title: str | None = None) -> Table:
    table = _table(
        "VER",
        "STAGE",
        "FORMAT",
        "PARAMS",
        "SIZE",
        "INPUTS",
        "CREATED",
        title=title,
        wrap=("INPUTS",),
    )
    for v in versions:
        _row(
            table,
            f"v{v.version}",
            v.stage,
            v.format,
            count(v.parameter_count),
            size(v.artifact.size),
            tensors(v.inputs),
            when(v.created_at),
        )
    return table


def model_view(model: ModelView, versions: list[ModelVersionView]) -> RenderableType:
    head = fields(
        [
            ("model", model.name),
            ("owner", model.owner),
            ("created", when(model.created_at, seconds=True)),
            ("latest", "-" if model.latest_version is None else f"v{model.latest_version}"),
        ]
    )
    if not versions:
        return head
    return Group(head, Text(""), versions_table(versions))


def version_view(v: ModelVersionView) -> RenderableType:
    rows: list[tuple[str, object]] = [
        ("model", f"{v.model_name}:{v.version}"),
        ("stage", v.stage),
        ("format", v.format),
        ("parameters", count(v.parameter_count)),
        ("opset", "-" if v.opset is None else v.opset),
        ("architecture", v.architecture or "-"),
        ("classes", count(v.num_classes)),
        ("file", f"{v.artifact.filename or '-'} ({size(v.artifact.size)})"),
        ("sha256", v.artifact.sha256),
        ("inputs", tensors(v.inputs)),
        ("outputs", tensors(v.outputs)),
        ("created", f"{when(v.created_at, seconds=True)} by {v.created_by}"),
    ]
    if v.description:
        rows.append(("description", v.description))
    lineage = v.lineage
    if lineage.parent_version is not None:
        rows.append(("parent", f"v{lineage.parent_version}"))
    if lineage.job_id:
        rows.append(("job", lineage.job_id))
    if lineage.dataset:
        rows.append(("dataset", lineage.dataset))
    for key, value in sorted(lineage.metrics.items()):
        rows.append((f"metric {key}", f"{value:.4g}"))
    return fields(rows)


def datasets_table(datasets: list[DatasetView]) -> Table:
    table = _table("NAME", "VERSION", "CLASSES", "IMAGES", "SIZE (HxW)", "SPLITS", "OWNER")
    for d in datasets:
        _row(
            table,
            d.name,
            f"v{d.version}",
            len(d.classes),
            count(d.num_images),
            "x".join(map(str, d.images.modal_hw)),
            _splits(d),
            d.owner,
        )
    return table


def _splits(d: DatasetView) -> str:
    s = d.splits
    return f"{s.train}/{s.val}/{s.test}"


def dataset_view(d: DatasetView) -> RenderableType:
    im = d.images
    rows: list[tuple[str, object]] = [
        ("dataset", f"{d.name} (v{d.version})"),
        ("owner", d.owner),
        ("created", when(d.created_at, seconds=True)),
        ("images", count(d.num_images)),
        ("image size", f"{'x'.join(map(str, im.min_hw))} .. {'x'.join(map(str, im.max_hw))}"),
        ("channels", im.channels),
        (
            "splits",
            f"train {d.splits.train}, val {d.splits.val}, test {d.splits.test}, "
            f"calibration {d.splits.calibration} (seed {d.seed})",
        ),
        ("source", f"{d.source.filename or '-'} ({size(d.source.size)})"),
    ]
    if d.description:
        rows.append(("description", d.description))
    classes = _table("CLASS", "IMAGES")
    for name, n in zip(d.classes, d.class_counts, strict=False):
        _row(classes, name, count(n))
    return Group(fields(rows), Text(""), classes)


def upload_line(result: UploadResult) -> Text:
    """One line saying what became of an upload."""
    what = f"{result.kind} {result.name}"
    if result.status == "validated":
        version = "" if result.version is None else f" version {result.version}"
        return Text(f"{what}{version} validated", style="green")
    if result.status == "pending":
        return Text(
            f"{what} is still being validated; follow it with: "
            f"cvops events {result.correlation_id}",
            style="yellow",
        )
    return Text(f"{what} rejected: {result.reason or 'no reason given'}", style="red")


def event_line(seq: int, event_type: str, data: dict[str, Any]) -> Text:
    """``seq  time  type  actor  key=value ...`` for one event of the feed."""
    facts = " ".join(
        f"{k}={_short(v)}" for k, v in data.items() if k not in _ENVELOPE and v not in (None, "")
    )
    occurred = str(data.get("occurred_at", ""))[:19].replace("T", " ")
    actor = str(data.get("actor", ""))
    return Text(f"{seq:>6}  {occurred}  {event_type}  {actor}  {facts}".rstrip())


def _short(value: object, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

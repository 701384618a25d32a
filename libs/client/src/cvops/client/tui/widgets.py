"""Widgets the screens share: a record table filled from the CLI's tables, a state line."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable, Static


class RecordTable(DataTable[object]):
    """One row per record, keyed by its id; filled from a table of :mod:`cvops.client.views`,
    so the TUI shows the columns and formats the CLI prints. Enter opens the record."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    @property
    def current_key(self) -> str | None:
        """The key of the row under the cursor."""
        if self.row_count == 0:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def show(
        self,
        table: Table,
        keys: Sequence[str],
        extra: Sequence[tuple[str, Sequence[Text]]] = (),
    ) -> None:
        """Replace the rows with ``table``'s (and ``extra`` columns), one key per row; the
        cursor stays on its record."""
        keep = self.current_key
        self.clear(columns=True)
        headers = [str(column.header) for column in table.columns] + [h for h, _ in extra]
        columns = [list(column.cells) for column in table.columns] + [list(c) for _, c in extra]
        for header in headers:
            self.add_column(Text(header, style="bold"))
        for key, cells in zip(keys, zip(*columns, strict=True), strict=True):
            self.add_row(*cells, key=key, height=None)
        if keep is not None and keep in keys:
            self.move_cursor(row=list(keys).index(keep), animate=False)


class StateLine(Static):
    """What a view is doing or what went wrong: ``loading models…``, ``3 models``, an error."""

    def busy(self, what: str) -> None:
        self.set_class(False, "problem")
        self.update(Text(f"loading {what}…", style="dim"))

    def note(self, text: str) -> None:
        self.set_class(False, "problem")
        self.update(Text(text, style="dim"))

    def problem(self, text: str) -> None:
        self.set_class(True, "problem")
        self.update(Text(text))

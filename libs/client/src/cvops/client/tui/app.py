"""The ``cvops tui`` application: who is signed in, the tabs, the keys, the error states.

Keys: 1-6 choose a tab (its label shows the key; 6, Users, only for roles that manage
users), arrows or j/k move, Enter opens a record, Escape goes back, r refreshes, ? lists every
key, q quits.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Static, TabbedContent
from textual.worker import get_current_worker

from cvops.client.sdk import CvopsError
from cvops.client.tui.panes import PANES, RecordPane
from cvops.client.tui.session import Connection, Session
from cvops.client.tui.widgets import StateLine
from cvops.contracts.api import UserView


class CvopsApp(App[None]):
    """The TUI over one gateway, as the user ``cvops login`` stored."""

    TITLE = "cvops"
    CSS_PATH = "cvops.tcss"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        *(  # the tabs' labels show these keys; the footer keeps its room for the rest
            Binding(str(n), f"show_tab('{pane.pane_id}')", pane.title, show=False)
            for n, pane in enumerate(PANES, start=1)
        ),
        Binding("r", "reload", "Refresh"),
        Binding("question_mark", "keys", "Keys"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self.session = Session(connection)
        self.animation_level = "none"  # nothing to animate over a slow link
        self.signed_in = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield StateLine(id="who")
        yield Static(id="problem")
        with TabbedContent(id="tabs", initial=PANES[0].pane_id):
            for n, pane in enumerate(PANES, start=1):
                yield pane(str(n))
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TabbedContent).hide_tab("users")
        self.sign_in()

    def on_unmount(self) -> None:
        self.session.close()

    # -- who is signed in -------------------------------------------------------------

    def sign_in(self) -> None:
        connection = self.session.connection
        if connection.token is None:
            self.signed_out(
                f"not logged in to {connection.url}: run `cvops login` (or set CVOPS_TOKEN), "
                "then press r"
            )
            return
        whose = f"{connection.username}'s account" if connection.username else "who you are"
        self.query_one("#who", StateLine).busy(f"{whose} at {connection.url}")
        self._who()

    @work(thread=True, exclusive=True, group="who")
    def _who(self) -> None:
        worker = get_current_worker()
        try:
            user = self.session.client.me()
        except CvopsError as err:
            if not worker.is_cancelled:
                self.call_from_thread(self.signed_out, self.session.problem(err))
            return
        if not worker.is_cancelled:
            self.call_from_thread(self._signed_in, user)

    def _signed_in(self, user: UserView) -> None:
        self.session.user = user
        self.signed_in = True
        self.query_one("#who", StateLine).note(
            f"signed in as {user.username} ({user.role}) at {self.session.connection.url}"
        )
        self.query_one("#problem").display = False
        tabs = self.query_one(TabbedContent)
        tabs.display = True
        if self.session.manages_users:
            tabs.show_tab("users")
        self._pane(tabs.active).activate()
        self.refresh_bindings()

    def signed_out(self, message: str) -> None:
        """Show why nothing can be shown; r tries again."""
        self.signed_in = False
        self.session.user = None
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.query_one("#who", StateLine).problem("not signed in")
        problem = self.query_one("#problem", Static)
        problem.update(message)
        problem.display = True
        tabs = self.query_one(TabbedContent)
        tabs.display = False
        tabs.hide_tab("users")
        for pane in self.query(RecordPane):
            pane.loaded_once = False
        self.refresh_bindings()

    # -- keys -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_tab":
            if parameters == ("users",) and not self.session.manages_users:
                return False  # no admin screens for other roles
            if not self.signed_in:
                return None  # shown greyed out until someone is signed in
        return True

    def _pane(self, pane_id: str) -> RecordPane:
        return self.query_one(f"#{pane_id}", RecordPane)

    def action_show_tab(self, pane_id: str) -> None:
        while len(self.screen_stack) > 1:  # from a record's screen straight to another tab
            self.pop_screen()
        tabs = self.query_one(TabbedContent)
        if tabs.active == pane_id:
            self._pane(pane_id).activate()
        else:
            tabs.active = pane_id

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if self.signed_in and isinstance(event.pane, RecordPane):
            event.pane.activate()

    def action_reload(self) -> None:
        if not self.signed_in:
            self.sign_in()
            return
        self._pane(self.query_one(TabbedContent).active).load()

    def action_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    async def action_quit(self) -> None:
        self.session.cut_feeds()  # live views' threads end now, not at their next event
        self.exit()

"""The ``cvops`` command line: tables for people, ``--json`` for scripts.

Exit codes: 0 ok, 1 the gateway (or NATS) refused or failed (``error: <code>: <detail>``
on stderr, never a traceback), 2 usage error, 3 cannot connect.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import httpx
import msgspec
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cvops.client import views
from cvops.client.config import ClientConfig, ConfigError, clear_config, load_config, save_config
from cvops.client.sdk import DEFAULT_URL, Client, CvopsError, Unreachable
from cvops.contracts.api import UploadResult
from cvops.contracts.identity import ROLES
from cvops.contracts.registry import STAGES

EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

F = TypeVar("F", bound=Callable[..., Any])


class CliState:
    """Per-invocation state: the gateway URL, the stored config and one SDK client."""

    def __init__(self, url: str | None = None, transport: httpx.BaseTransport | None = None):
        self.url = url or DEFAULT_URL
        self.transport = transport  # tests hand in an httpx.MockTransport
        self.config = ClientConfig()
        self._client: Client | None = None

    def token(self) -> str | None:
        """``$CVOPS_TOKEN``, else the stored token if it was issued by this gateway."""
        if os.environ.get("CVOPS_TOKEN"):
            return os.environ["CVOPS_TOKEN"]
        if self.config.token and _same_url(self.config.url, self.url):
            return self.config.token
        return None

    def client(self, *, authenticated: bool = True) -> Client:
        if self._client is None:
            token = self.token() if authenticated else None
            self._client = Client(self.url, token, transport=self.transport)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _same_url(a: str | None, b: str | None) -> bool:
    return bool(a and b) and str(a).rstrip("/") == str(b).rstrip("/")


class CvopsGroup(click.Group):
    """Turns SDK errors into one stderr line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Unreachable as err:
            click.echo(
                f"error: cannot reach {err.what} at {err.url} — is `./justw up` running?",
                err=True,
            )
            ctx.exit(EXIT_UNREACHABLE)
        except CvopsError as err:
            click.echo(f"error: {err.message}", err=True)
            if err.status == 401 and ctx.invoked_subcommand != "login":
                click.echo("hint: log in with `cvops login` (or set CVOPS_TOKEN)", err=True)
            ctx.exit(EXIT_API_ERROR)
        except ConfigError as err:
            click.echo(f"error: bad_config: {err}", err=True)
            ctx.exit(EXIT_API_ERROR)


def _state() -> CliState:
    return click.get_current_context().find_object(CliState)  # type: ignore[return-value]


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _show(renderable: RenderableType) -> None:
    _console().print(renderable)


def _emit_json(value: object) -> None:
    click.echo(msgspec.json.encode(value).decode())


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
    )(f)


def _parse_ref(value: str, *, need_version: bool) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION`` (``NAME:v3`` also works)."""
    name, sep, version = value.rpartition(":")
    if not sep:
        if need_version:
            raise click.BadParameter(f"expected NAME:VERSION, got {value!r}")
        return value, None
    digits = version.removeprefix("v")
    if not name or not digits.isdigit() or int(digits) < 1:
        raise click.BadParameter(f"expected NAME:VERSION with VERSION >= 1, got {value!r}")
    return name, int(digits)


# -- root ---------------------------------------------------------------------------------


@click.group(cls=CvopsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="CVOPS_URL",
    metavar="URL",
    help=f"Gateway URL [env CVOPS_URL; default: the one you logged in to, else {DEFAULT_URL}]",
)
@click.version_option(package_name="cvops-client", prog_name="cvops")
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """cvops: register, tune, convert, benchmark and deploy computer-vision models."""
    state = ctx.ensure_object(CliState)
    try:
        state.config = load_config()
    except ConfigError:
        state.config = ClientConfig()  # `login` rewrites it; other commands report it
        if ctx.invoked_subcommand not in ("login", "logout"):
            raise
    state.url = (url or state.config.url or state.url).rstrip("/")
    ctx.call_on_close(state.close)


# -- identity -----------------------------------------------------------------------------


@cli.command()
@click.option("--username", "-u", help="Prompted for when missing.")
@click.option("--password", "-p", help="Prompted for (hidden) when missing.")
@click.option("--token", help="Store this API token instead of logging in with a password.")
def login(username: str | None, password: str | None, token: str | None) -> None:
    """Log in and remember the gateway URL and token (file mode 0600)."""
    state = _state()
    client = state.client(authenticated=False)
    if token:
        client.token = token
        me = client.me()  # refuse to store a token the gateway does not accept
        config = ClientConfig(url=state.url, token=token, username=me.username)
        user, role = me.username, me.role
    else:
        username = username or click.prompt("Username")
        password = password or click.prompt("Password", hide_input=True)
        session = client.login(username, password)
        config = ClientConfig(
            url=state.url,
            token=session.token,
            username=session.username,
            expires_at=session.expires_at,
        )
        user, role = session.username, session.role
    path = save_config(config)
    click.echo(f"logged in to {state.url} as {user} ({role}); token stored in {path}")


@cli.command()
def logout() -> None:
    """Revoke the session at the gateway (when it answers) and forget the stored token."""
    state = _state()
    if state.token() and not os.environ.get("CVOPS_TOKEN"):
        try:
            state.client().logout()
        except CvopsError as err:  # unreachable, or already expired: forget it anyway
            click.echo(f"note: the gateway did not revoke the token ({err.message})", err=True)
    if clear_config():
        click.echo("logged out")
    else:
        click.echo("not logged in")


@cli.command()
@json_option
def whoami(as_json: bool) -> None:
    """The user the stored token belongs to."""
    state = _state()
    me = state.client().me()
    if as_json:
        _emit_json(me)
    else:
        _show(views.user_fields(me, state.url))


@cli.command()
@click.option("--live", is_flag=True, help="Only check that the gateway answers.")
@json_option
def health(live: bool, as_json: bool) -> None:
    """Is the gateway ready (NATS reachable, projection caught up)?"""
    result = _state().client(authenticated=False).health(ready=not live)
    if as_json:
        _emit_json(result)
    else:
        _show(views.fields([("status", result.status), *sorted(result.checks.items())]))
    if result.status == "down":
        raise click.exceptions.Exit(EXIT_API_ERROR)


@cli.group()
def users() -> None:
    """Users and roles (admin only)."""


@users.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password", help="Prompted for (hidden, twice) when missing.")
@json_option
def users_add(username: str, role: str, password: str | None, as_json: bool) -> None:
    """Create a user."""
    password = password or click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _state().client().create_user(username, password, role)  # type: ignore[arg-type]
    if as_json:
        _emit_json(user)
    else:
        click.echo(f"created user {user.username} ({user.role})")


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """Every user."""
    found = _state().client().list_users()
    if as_json:
        _emit_json(found)
    else:
        _show(views.users_table(found))


@users.command("set")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES))
@click.option("--password", is_flag=False, flag_value="", default=None, help="New password.")
@click.option("--disable/--enable", "disabled", default=None, help="Lock or unlock the user.")
@json_option
def users_set(
    username: str, role: str | None, password: str | None, disabled: bool | None, as_json: bool
) -> None:
    """Change a user's role, password, or lock them out."""
    if password == "":
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    if role is None and password is None and disabled is None:
        raise click.UsageError("nothing to change: give --role, --password or --disable/--enable")
    user = (
        _state()
        .client()
        .update_user(
            username,
            role=role,  # type: ignore[arg-type]
            password=password,
            disabled=disabled,
        )
    )
    if as_json:
        _emit_json(user)
    else:
        status = "disabled" if user.disabled else "active"
        click.echo(f"updated user {user.username} ({user.role}, {status})")


@cli.group()
def tokens() -> None:
    """API tokens of the current user (for scripts and CI)."""


@tokens.command("create")
@click.option("--label", default="", help="What the token is for.")
@json_option
def tokens_create(label: str, as_json: bool) -> None:
    """Issue an API token; the secret is shown once."""
    created = _state().client().create_token(label)
    if as_json:
        _emit_json(created)
        return
    click.echo(f"token {created.token_id} ({created.label or 'no label'}):")
    click.echo(created.token)
    click.echo("store it now: it is not shown again", err=True)


@tokens.command("list")
@json_option
def tokens_list(as_json: bool) -> None:
    """Your API tokens (no secrets)."""
    found = _state().client().list_tokens()
    if as_json:
        _emit_json(found)
    else:
        _show(views.tokens_table(found))


@tokens.command("revoke")
@click.argument("token_id")
def tokens_revoke(token_id: str) -> None:
    """Revoke an API token."""
    _state().client().revoke_token(token_id)
    click.echo(f"revoked token {token_id}")


# -- models -------------------------------------------------------------------------------


@contextmanager
def _transfer_bar(label: str, done_label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields the callback the SDK reports bytes to."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(label, total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)
            if total and done >= total:
                bar.update(task, description=done_label)

        yield report


def _upload_outcome(result: UploadResult, as_json: bool) -> None:
    if as_json:
        _emit_json(result)
    else:
        _console().print(views.upload_line(result))
        click.echo(f"correlation id: {result.correlation_id}")
    if result.status == "rejected":
        if as_json:
            click.echo(f"error: rejected: {result.reason or 'no reason given'}", err=True)
        raise click.exceptions.Exit(EXIT_API_ERROR)


@cli.group()
def models() -> None:
    """Models and their versions."""


@models.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--name", "-n", required=True, help="Model name (each upload adds a version).")
@click.option("--architecture", help="Zoo architecture (needed for safetensors weights).")
@click.option("--num-classes", type=click.IntRange(min=1))
@click.option("--input-shape", metavar="C,H,W", help="Input shape without batch, e.g. 3,32,32.")
@click.option("--description", default="")
@json_option
def models_upload(
    path: str,
    name: str,
    architecture: str | None,
    num_classes: int | None,
    input_shape: str | None,
    description: str,
    as_json: bool,
) -> None:
    """Upload an ONNX, TorchScript, .pt2 or safetensors file."""
    if input_shape is not None:
        parts = input_shape.replace(" ", "").split(",")
        if not all(p.isdigit() and int(p) > 0 for p in parts):
            raise click.BadParameter(
                "expected positive integers like 3,32,32", param_hint="--input-shape"
            )
    filename = os.path.basename(path)
    with _transfer_bar(f"uploading {filename}", f"validating {filename}") as progress:
        result = (
            _state()
            .client()
            .upload_model(
                path,
                name,
                architecture=architecture,
                num_classes=num_classes,
                input_shape=input_shape,
                description=description,
                progress=progress,
            )
        )
    _upload_outcome(result, as_json)


@models.command("list")
@json_option
def models_list(as_json: bool) -> None:
    """Every registered model."""
    found = _state().client().list_models()
    if as_json:
        _emit_json(found)
    else:
        _show(views.models_table(found))


@models.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@json_option
def models_show(ref: str, as_json: bool) -> None:
    """A model and its versions, or one version in detail."""
    name, version = _parse_ref(ref, need_version=False)
    client = _state().client()
    if version is not None:
        found = client.show_version(name, version)
        if as_json:
            _emit_json(found)
        else:
            _show(views.version_view(found))
        return
    model = client.show_model(name)
    if as_json:
        _emit_json(model)
        return
    versions = model.versions
    if not versions and model.latest_version is not None:
        versions = client.list_versions(name)
    _show(views.model_view(model, versions))


@models.command("stage")
@click.argument("ref", metavar="NAME:VERSION")
@click.argument("stage", type=click.Choice(STAGES))
@json_option
def models_stage(ref: str, stage: str, as_json: bool) -> None:
    """Move a version to none, staging, production or archived."""
    name, version = _parse_ref(ref, need_version=True)
    assert version is not None
    changed = _state().client().set_stage(name, version, stage)  # type: ignore[arg-type]
    if as_json:
        _emit_json(changed)
    else:
        click.echo(f"{changed.model_name}:{changed.version} is now {changed.stage}")


@models.command("download")
@click.argument("ref", metavar="NAME:VERSION")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=True, writable=True),
    default=".",
    show_default=True,
    help="File to write, or a directory to put it in.",
)
def models_download(ref: str, output: str) -> None:
    """Download a version's file."""
    name, version = _parse_ref(ref, need_version=True)
    assert version is not None
    with _transfer_bar(f"downloading {name}:{version}", f"downloaded {name}:{version}") as progress:
        written = _state().client().download_artifact(name, version, output, progress=progress)
    click.echo(f"wrote {written}")


# -- data sets ----------------------------------------------------------------------------


@cli.group()
def datasets() -> None:
    """Data sets (ImageFolder .zip or .npz)."""


@datasets.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--name", "-n", required=True, help="Data-set name.")
@click.option("--description", default="")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the splits.")
@json_option
def datasets_upload(path: str, name: str, description: str, seed: int, as_json: bool) -> None:
    """Upload a data set and wait for its validation."""
    filename = os.path.basename(path)
    with _transfer_bar(f"uploading {filename}", f"validating {filename}") as progress:
        result = (
            _state()
            .client()
            .upload_dataset(path, name, description=description, seed=seed, progress=progress)
        )
    _upload_outcome(result, as_json)


@datasets.command("list")
@json_option
def datasets_list(as_json: bool) -> None:
    """Every registered data set."""
    found = _state().client().list_datasets()
    if as_json:
        _emit_json(found)
    else:
        _show(views.datasets_table(found))


@datasets.command("show")
@click.argument("name")
@json_option
def datasets_show(name: str, as_json: bool) -> None:
    """Classes, counts, image sizes and splits of a data set."""
    found = _state().client().show_dataset(name)
    if as_json:
        _emit_json(found)
    else:
        _show(views.dataset_view(found))


# -- events -------------------------------------------------------------------------------


@cli.command()
@click.argument("correlation_id")
@click.option(
    "--until",
    "until",
    multiple=True,
    metavar="GLOB",
    help="Stop after an event whose type matches, e.g. 'registry.*_rejected.*'. Repeatable.",
)
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Wait for new events, or stop after the ones so far.",
)
@json_option
def events(correlation_id: str, until: tuple[str, ...], follow: bool, as_json: bool) -> None:
    """Print the events of one request or job, then follow new ones (Ctrl-C to stop)."""
    console = _console()
    feed = _state().client().events(correlation_id, follow=follow)
    try:
        for seq, event_type, data in feed:
            if as_json:
                _emit_json({"seq": seq, "type": event_type, "data": data})
            else:
                console.print(views.event_line(seq, event_type, data), soft_wrap=True)
            if any(fnmatch.fnmatchcase(event_type, pattern) for pattern in until):
                break
    except KeyboardInterrupt:
        pass
    finally:
        feed.close()


# -- projections --------------------------------------------------------------------------


@cli.group()
def projections() -> None:
    """Operator tools for the services' SQLite projections (talk to NATS directly)."""


@projections.command("rebuild")
@click.argument("service")
@click.option("--force", is_flag=True, help="Rebuild even though the service looks running.")
def projections_rebuild(service: str, force: bool) -> None:
    """Throw away SERVICE's projection and replay the event log into it."""
    try:
        from cvops.client import rebuild
    except ImportError as err:  # cvops-core is an optional dependency of the client
        raise CvopsError(
            0, "missing_dependency", f"{err}; install it with: pip install 'cvops-client[ops]'"
        ) from err
    try:
        applied, db_path = rebuild.rebuild_service(service, force=force)
    except rebuild.UnknownService as err:
        raise click.BadParameter(str(err), param_hint="SERVICE") from err
    click.echo(f"rebuilt {service} projection {db_path}: {applied} events applied")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cvops")

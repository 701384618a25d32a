"""The ``cvops`` command line: tables for people, ``--json`` for scripts.

Exit codes: 0 ok, 1 the gateway (or NATS) refused or failed (``error: <code>: <detail>``
on stderr, never a traceback), 2 usage error, 3 cannot connect.
"""

from __future__ import annotations

import fnmatch
import os
import time
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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

from cvops.client import progress, views
from cvops.client.config import ClientConfig, ConfigError, clear_config, load_config, save_config
from cvops.client.sdk import DEFAULT_URL, Client, CvopsError, Unreachable
from cvops.contracts.api import (
    BenchmarkView,
    ConversionView,
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    JobView,
    UploadResult,
)
from cvops.contracts.conversion import CALIBRATION_METHODS
from cvops.contracts.deployment import PRECISIONS, SERVING_ENGINES
from cvops.contracts.identity import ROLES
from cvops.contracts.registry import STAGES
from cvops.contracts.training import ARCHITECTURES, Budget, Constraints, ParamSpec

EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

# After training.completed: how long `cvops train` waits for the registry's verdicts.
VERDICT_WAIT_S = 30.0

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


# Width of tables written to a pipe or a file: whole rows rather than ellipses.
PIPE_WIDTH = 200


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def _show(renderable: RenderableType) -> None:
    _console().print(renderable)


def _emit_json(value: object) -> None:
    click.echo(msgspec.json.encode(value).decode())


def _output(found: Any, as_json: bool, render: Callable[[Any], RenderableType]) -> None:
    """JSON of ``found`` for scripts, else ``render(found)`` for people."""
    if as_json:
        _emit_json(found)
    else:
        _show(render(found))


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


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """The platform now: services and their instances (version, health, projection lag,
    pending work), the event streams, each host's GPUs and who leases them."""
    _output(_state().client().system(), as_json, views.system_view)


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
    _output(found, as_json, views.users_table)


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
    _output(found, as_json, views.tokens_table)


@tokens.command("revoke")
@click.argument("token_id")
def tokens_revoke(token_id: str) -> None:
    """Revoke an API token."""
    _state().client().revoke_token(token_id)
    click.echo(f"revoked token {token_id}")


# -- models -------------------------------------------------------------------------------


@contextmanager
def _transfer_bar(label: str, done_label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields the callback the SDK reports bytes to.

    The bar shows from the first byte on: a request refused before any is sent (a role
    that may not upload) leaves no bar behind its error line.
    """
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task(label, total=None)
    started = False

    def report(done: int, total: int) -> None:
        nonlocal started
        if not started:
            bar.start()
            started = True
        bar.update(task, completed=done, total=total or None)
        if total and done >= total:
            bar.update(task, description=done_label)

    try:
        yield report
    finally:
        if started:
            bar.stop()


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
    _output(found, as_json, views.models_table)


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


@models.command("artifacts")
@click.argument("ref", metavar="NAME:VERSION")
@json_option
def models_artifacts(ref: str, as_json: bool) -> None:
    """Engines converted from a version (ONNX, FP16, INT8, OpenVINO...) with their parity."""
    name, version = _parse_ref(ref, need_version=True)
    assert version is not None
    found = _state().client().list_engine_artifacts(name, version)
    _output(found, as_json, views.engine_artifacts_table)


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
    _output(found, as_json, views.datasets_table)


@datasets.command("show")
@click.argument("name")
@json_option
def datasets_show(name: str, as_json: bool) -> None:
    """Classes, counts, image sizes and splits of a data set."""
    found = _state().client().show_dataset(name)
    _output(found, as_json, views.dataset_view)


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


# -- following jobs -------------------------------------------------------------------------


def _int_list(value: str | None, what: str) -> list[int] | None:
    """``"1,8,32"`` -> ``[1, 8, 32]``; None stays None."""
    if value is None:
        return None
    try:
        numbers = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError as err:
        raise click.BadParameter(f"expected integers like 1,8,32, got {value!r}") from err
    if not numbers:
        raise click.BadParameter(f"expected at least one {what}")
    return numbers


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _scalar(raw: str) -> Any:
    """A command-line value as the number, boolean or text it looks like."""
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw.strip()


def _assignments(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint=option)
        out[key.strip()] = value.strip()
    return out


_SPACE_KINDS = {"float": "float", "log": "log_float", "log_float": "log_float", "int": "int"}


def _param_spec(name: str, text: str) -> ParamSpec:
    """``log:1e-4:0.1``, ``float:0.2:0.8``, ``int:1:4`` or choices ``sgd,adamw``."""
    kind, sep, bounds = text.partition(":")
    if sep and kind in _SPACE_KINDS:
        low, _, high = bounds.partition(":")
        try:
            return ParamSpec(kind=_SPACE_KINDS[kind], low=float(low), high=float(high))  # type: ignore[arg-type]
        except ValueError as err:
            raise click.BadParameter(
                f"{name}: expected {kind}:LOW:HIGH, got {text!r}", param_hint="--space"
            ) from err
    return ParamSpec(kind="categorical", choices=[_scalar(c) for c in text.split(",")])


@contextmanager
def _live(as_json: bool) -> Iterator[Any]:
    """Progress bars on stderr (none with --json); Ctrl-C ends the watch, not the job."""
    console = Console(stderr=True, highlight=False, quiet=as_json)
    bars = progress.bars(console)
    try:
        with bars:
            yield bars
    except KeyboardInterrupt:
        click.echo("stopped watching; the work goes on at the gateway", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _follow(
    client: Client,
    correlation_id: str,
    until: progress.Until,
    tracker: Any,
    bars: Any,
) -> None:
    """Feed every event of the feed to ``tracker`` and print its milestone lines."""
    for _seq, event_type, data in client.follow(correlation_id, until):
        line = tracker.update(event_type, data)
        if line:
            bars.console.print(line, soft_wrap=True, markup=False)


def _fail(message: str) -> None:
    """End with exit 1 and ``error: <message>`` (the result was already printed)."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(EXIT_API_ERROR)


# -- training -------------------------------------------------------------------------------


def _registered_verdicts(client: Client, job: JobView) -> JobView:
    """The job once the registry judged every model it registered (or the wait ran out)."""
    deadline = time.monotonic() + VERDICT_WAIT_S
    while any(m.status == "pending" for m in job.models) and time.monotonic() < deadline:
        time.sleep(0.5)
        job = client.show_job(job.job_id)
    return job


def _watch_job(client: Client, job: JobView, as_json: bool) -> None:
    """Follow a job to its end with live bars; then print the front and the models."""
    with _live(as_json) as bars:
        tracker = progress.TrainingProgress(bars, job.job_id)
        ended = progress.ends_with(progress.TRAINING_ENDS, "job_id", job.job_id)
        _follow(client, job.correlation_id, ended, tracker, bars)
    job = client.show_job(job.job_id)
    if job.status == "completed":
        job = _registered_verdicts(client, job)
    if as_json:
        _emit_json(job)
    elif job.status == "completed":
        _show(views.job_result(job))
    if job.status != "completed":
        _fail(f"training {job.status}: {job.reason or 'no reason given'}")


@cli.command()
@click.option("--dataset", required=True, help="Registered data set to train on.")
@click.option("--dataset-version", type=click.IntRange(min=1), help="Default: the newest.")
@click.option("--arch", required=True, help=f"Zoo architecture: {', '.join(ARCHITECTURES)}.")
@click.option("--budget", type=int, help="Number of trials.")
@click.option("--population", type=int, help="Individuals per generation.")
@click.option("--generations", type=int, help="Generations of the search.")
@click.option(
    "--objectives",
    default="accuracy,latency",
    show_default=True,
    help="Comma-separated: accuracy, latency, size.",
)
@click.option(
    "--weights",
    metavar="OBJ=W,...",
    help="Weighted single objective instead of the Pareto front, e.g. accuracy=1,latency=0.2.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, help="Epochs per trial (fixed).")
@click.option("--image-size", type=int, help="Train at this square size.")
@click.option("--max-latency-ms", type=float, help="Constraint: batch-1 latency.")
@click.option("--max-params", type=int, help="Constraint: number of parameters.")
@click.option(
    "--single", is_flag=True, help="One plain training run of the --set values; no search."
)
@click.option("--set", "fixed", multiple=True, metavar="NAME=VALUE", help="Fix a hyperparameter.")
@click.option(
    "--space",
    multiple=True,
    metavar="NAME=RANGE",
    help="Search range: lr=log:1e-4:0.1, width=float:0.25:1, depth=int:1:4, optimizer=sgd,adamw.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="cuda counts against the GPU quotas.",
)
@click.option(
    "--engine",
    "target_engine",
    default="onnxruntime-cpu",
    show_default=True,
    help="Engine the latency objective is measured on.",
)
@click.option("--model-name", help="Register the results under this model name.")
@click.option(
    "--register",
    "register_limit",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="How many front models to register.",
)
@click.option("--max-batches-per-epoch", type=click.IntRange(min=1), hidden=True)
@click.option("--detach", is_flag=True, help="Start the job and return; watch it later.")
@json_option
def train(
    dataset: str,
    dataset_version: int | None,
    arch: str,
    budget: int | None,
    population: int | None,
    generations: int | None,
    objectives: str,
    weights: str | None,
    seed: int,
    epochs: int | None,
    image_size: int | None,
    max_latency_ms: float | None,
    max_params: int | None,
    single: bool,
    fixed: tuple[str, ...],
    space: tuple[str, ...],
    device: str,
    target_engine: str,
    model_name: str | None,
    register_limit: int,
    max_batches_per_epoch: int | None,
    detach: bool,
    as_json: bool,
) -> None:
    """Tune a model with a genetic search (or --single: train one configuration).

    Follows the job with a live bar per generation and per trial, then prints the Pareto
    front and the model versions it registered.
    """
    weight_values = _assignments(tuple(_names(weights) or ()), "--weights")
    try:
        parsed_weights = {k: float(v) for k, v in weight_values.items()}
    except ValueError as err:
        raise click.BadParameter("weights must be numbers", param_hint="--weights") from err
    request = CreateJob(
        dataset=dataset,
        dataset_version=dataset_version,
        arch=arch,
        job_type="single" if single else "search",
        search_space={k: _param_spec(k, v) for k, v in _assignments(space, "--space").items()},
        hyperparameters={k: _scalar(v) for k, v in _assignments(fixed, "--set").items()},
        budget=Budget(trials=budget, population=population, generations=generations),
        objectives=_names(objectives) or [],
        mode="weighted" if parsed_weights else "pareto",
        weights=parsed_weights,
        constraints=Constraints(max_latency_ms=max_latency_ms, max_parameters=max_params),
        seed=seed,
        image_size=image_size,
        epochs=epochs,
        target_engine=target_engine,
        device=device,  # type: ignore[arg-type]
        model_name=model_name,
        register_limit=register_limit,
        max_batches_per_epoch=max_batches_per_epoch,
    )
    client = _state().client()
    created = client.create_job(request)
    if detach:
        if as_json:
            _emit_json(created)
        else:
            click.echo(
                f"job {created.job_id} started; watch it with: cvops jobs watch {created.job_id}"
            )
        return
    if not as_json:
        click.echo(
            f"job {created.job_id} started (correlation id {created.correlation_id})", err=True
        )
    _watch_job(client, client.show_job(created.job_id), as_json)


@cli.group()
def jobs() -> None:
    """Training jobs: list, show, cancel, watch."""


@jobs.command("list")
@click.option(
    "--status", type=click.Choice(["requested", "running", "completed", "failed", "cancelled"])
)
@json_option
def jobs_list(status: str | None, as_json: bool) -> None:
    """Training jobs, newest first."""
    found = _state().client().list_jobs(status)  # type: ignore[arg-type]
    _output(found, as_json, views.jobs_table)


@jobs.command("show")
@click.argument("job_id")
@json_option
def jobs_show(job_id: str, as_json: bool) -> None:
    """A job: plan, generations, trials with metrics, Pareto front, registered models."""
    job = _state().client().show_job(job_id)
    if as_json:
        _emit_json(job)
    else:
        _show(views.job_view(job))


@jobs.command("cancel")
@click.argument("job_id")
@json_option
def jobs_cancel(job_id: str, as_json: bool) -> None:
    """Stop a job (yours; admins: anyone's). Running trials stop within seconds."""
    job = _state().client().cancel_job(job_id)
    if as_json:
        _emit_json(job)
    else:
        click.echo(f"cancel requested for job {job.job_id} ({job.status})")


@jobs.command("watch")
@click.argument("job_id")
@json_option
def jobs_watch(job_id: str, as_json: bool) -> None:
    """Follow a job (its history, then live) to its end, then print its result."""
    client = _state().client()
    _watch_job(client, client.show_job(job_id), as_json)


# -- deployments ----------------------------------------------------------------------------


def _await_deployment(
    client: Client, name: str, correlation_id: str, ends: tuple[str, ...], as_json: bool
) -> None:
    """Follow a deployment request until the router answers, then show the deployment."""
    with _live(as_json) as bars:
        tracker = progress.DeploymentProgress(bars, name)
        _follow(client, correlation_id, progress.ends_with(ends, "deployment", name), tracker, bars)
    deployment = client.show_deployment(name)
    if as_json:
        _emit_json(deployment)
    else:
        _show(views.deployment_view(deployment))
    if deployment.status == "failed":
        _fail(f"deployment failed: {deployment.reason or 'no reason given'}")


@cli.command()
@click.argument("ref", metavar="MODEL:VERSION")
@click.option("--name", "deployment", help="Name clients infer against (default: MODEL).")
@click.option(
    "--engine", type=click.Choice(SERVING_ENGINES), default="onnxruntime-cpu", show_default=True
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="Which converted artifact the engine serves (convert it first).",
)
@click.option(
    "--from-benchmark",
    "from_benchmark",
    metavar="BENCH_ID",
    help="Serve what this benchmark picked: its engine, precision, artifact and batcher.",
)
@click.option(
    "--recommended",
    is_flag=True,
    help="Like --from-benchmark with the version's newest completed benchmark.",
)
@click.option(
    "--canary",
    metavar="MODEL:VERSION[@PRECISION]=PCT%",
    help="Send a share to another version, or another engine (e.g. net:1@int8=10%).",
)
@click.option("--public", is_flag=True, help="Inference needs no token.")
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Triton dynamic batching (0: off).",
)
@click.option("--preferred-batch-sizes", metavar="N,N", help="e.g. 4,8.")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=500, show_default=True)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Model instances per Triton server.",
)
@click.option("--detach", is_flag=True, help="Return once requested; do not wait.")
@json_option
def deploy(
    ref: str,
    deployment: str | None,
    engine: str,
    precision: str,
    from_benchmark: str | None,
    recommended: bool,
    canary: str | None,
    public: bool,
    max_batch_size: int,
    preferred_batch_sizes: str | None,
    max_queue_delay_us: int,
    instances: int,
    detach: bool,
    as_json: bool,
) -> None:
    """Serve a model version behind Triton; waits until it is ready (or failed).

    The engine and precision pick the artifact served (the version's own ONNX file, or an
    FP16/INT8/OpenVINO engine `cvops convert` produced); --from-benchmark / --recommended
    serve exactly what a benchmark measured and picked, with its batcher settings.
    """
    name, version = _parse_ref(ref, need_version=True)
    assert version is not None
    if from_benchmark and recommended:
        raise click.UsageError("give --from-benchmark or --recommended, not both")
    request = CreateDeployment(
        model_name=name,
        version=version,
        deployment=deployment,
        engine=engine,
        precision=precision,
        from_benchmark=from_benchmark,
        recommended=recommended,
        canary=canary,
        public=public,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=_int_list(preferred_batch_sizes, "batch size") or [],
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instances,
    )
    client = _state().client()
    requested = client.deploy(request)
    if detach:
        if as_json:
            _emit_json(requested)
        else:
            click.echo(f"deployment {requested.deployment} requested ({requested.status})")
        return
    _await_deployment(
        client, requested.deployment, requested.correlation_id, progress.DEPLOYMENT_ENDS, as_json
    )


@cli.group()
def deployments() -> None:
    """Deployments behind the inference router: list, show, retire."""


@deployments.command("list")
@json_option
def deployments_list(as_json: bool) -> None:
    """Every deployment, retired ones included."""
    found = _state().client().list_deployments()
    _output(found, as_json, views.deployments_table)


@deployments.command("show")
@click.argument("name")
@json_option
def deployments_show(name: str, as_json: bool) -> None:
    """A deployment: spec, status, the version it serves."""
    found = _state().client().show_deployment(name)
    _output(found, as_json, views.deployment_view)


@deployments.command("retire")
@click.argument("name")
@click.option("--detach", is_flag=True, help="Return once requested; do not wait.")
@json_option
def deployments_retire(name: str, detach: bool, as_json: bool) -> None:
    """Undeploy; waits until the router has unloaded it."""
    client = _state().client()
    retiring = client.retire_deployment(name)
    if detach:
        if as_json:
            _emit_json(retiring)
        else:
            click.echo(f"deployment {name} is {retiring.status}")
        return
    _await_deployment(client, name, retiring.correlation_id, progress.RETIREMENT_ENDS, as_json)


@cli.command()
@click.argument("name", metavar="DEPLOYMENT")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=True, writable=True),
    default=".",
    show_default=True,
    help="File to write, or a directory to put DEPLOYMENT.tar.gz in.",
)
def package(name: str, output: str) -> None:
    """Download what a deployment serves as a model bundle for the NGC Triton image.

    The .tar.gz holds the Triton model repository, a Dockerfile, a tritonclient example, a
    README and SHA256SUMS; it is checked against its digest and its sums before this ends.
    """
    with _transfer_bar(f"packaging {name}", f"downloaded {name}") as bar:
        written, files = _state().client().download_package(name, output, progress=bar)
    click.echo(f"wrote {written} ({len(files)} files match its SHA256SUMS)")
    click.echo(f"next: tar xzf {written} && docker build -t cvops-{name} {name}/")


# -- conversions and benchmarks -------------------------------------------------------------


@cli.command()
@click.argument("ref", metavar="MODEL:VERSION")
@click.option(
    "--targets",
    metavar="T,T",
    help="onnx, fp16, int8, openvino, openvino-int8, tensorrt-fp16, tensorrt-int8 or tensorrt "
    "[default: all]",
)
@click.option(
    "--calibration",
    type=click.Choice(CALIBRATION_METHODS),
    default="minmax",
    show_default=True,
    help="INT8 calibration method.",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="Accuracy gate, in points.",
)
@click.option(
    "--dataset",
    help="Validation/calibration data (default: the model's lineage; an uploaded model has "
    "none, so name one).",
)
@click.option("--validation-images", type=click.IntRange(min=1), help="Cap on parity images.")
@click.option("--detach", is_flag=True, help="Start the conversion and return.")
@json_option
def convert(
    ref: str,
    targets: str | None,
    calibration: str,
    max_accuracy_drop: float,
    dataset: str | None,
    validation_images: int | None,
    detach: bool,
    as_json: bool,
) -> None:
    """Convert a model version to engines, each with a parity report and accuracy gate."""
    name, version = _parse_ref(ref, need_version=True)
    assert version is not None
    fields: dict[str, Any] = {}
    if targets is not None:
        fields["targets"] = _names(targets)
    request = CreateConversion(
        model_name=name,
        version=version,
        calibration=calibration,
        max_accuracy_drop=max_accuracy_drop,
        dataset=dataset,
        validation_images=validation_images,
        **fields,
    )
    client = _state().client()
    created = client.convert(request)
    if detach:
        if as_json:
            _emit_json(created)
        else:
            click.echo(
                f"conversion {created.job_id} started; see it with: "
                f"cvops conversions show {created.job_id}"
            )
        return
    pending = client.show_conversion(created.job_id)
    with _live(as_json) as bars:
        tracker = progress.ConversionProgress(
            bars, created.job_id, [t.target for t in pending.targets]
        )
        ended = progress.ends_with(progress.CONVERSION_ENDS, "job_id", created.job_id)
        _follow(client, created.correlation_id, ended, tracker, bars)
    _conversion_result(client.show_conversion(created.job_id), as_json)


def _conversion_result(conversion: ConversionView, as_json: bool) -> None:
    if as_json:
        _emit_json(conversion)
    else:
        _show(views.conversion_table(conversion))
    if conversion.status == "failed":
        op = f" (operator {conversion.op})" if conversion.op else ""
        _fail(f"conversion failed: {conversion.reason or 'no reason given'}{op}")


@cli.group()
def conversions() -> None:
    """Conversion jobs."""


@conversions.command("show")
@click.argument("job_id")
@json_option
def conversions_show(job_id: str, as_json: bool) -> None:
    """Each target of a conversion: produced (with parity), rejected or unavailable."""
    _conversion_result(_state().client().show_conversion(job_id), as_json)


@cli.command()
@click.argument("ref", metavar="MODEL:VERSION")
@click.option("--engines", metavar="E,E", help="Engines to measure [default: every one here].")
@click.option("--batch-sizes", metavar="N,N", help="[default: 1,8,32]")
@click.option("--concurrency", metavar="N,N", help="[default: 1,4,16]")
@click.option("--p95-ms", type=float, help="SLA: p95 latency per request.")
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="SLA: accuracy drop against the source model, in points.",
)
@click.option(
    "--time-cap-s",
    type=float,
    default=1.0,
    show_default=True,
    help="Measuring time per cell at most; a cell stops sooner once its p95 is known to ±5%.",
)
@click.option("--conversion-job", help="Measure the engines of this conversion.")
@click.option("--dataset", help="Accuracy data (default: the model's lineage).")
@click.option("--detach", is_flag=True, help="Start the benchmark and return.")
@json_option
def bench(
    ref: str,
    engines: str | None,
    batch_sizes: str | None,
    concurrency: str | None,
    p95_ms: float | None,
    max_accuracy_drop: float,
    time_cap_s: float,
    conversion_job: str | None,
    dataset: str | None,
    detach: bool,
    as_json: bool,
) -> None:
    """Benchmark every engine of a model version and recommend one under the SLA."""
    name, version = _parse_ref(ref, need_version=True)
    assert version is not None
    fields: dict[str, Any] = {}
    if batch_sizes is not None:
        fields["batch_sizes"] = _int_list(batch_sizes, "batch size")
    if concurrency is not None:
        fields["concurrency"] = _int_list(concurrency, "concurrency")
    request = CreateBenchmark(
        model_name=name,
        version=version,
        engines=_names(engines) or [],
        p95_ms=p95_ms,
        max_accuracy_drop=max_accuracy_drop,
        time_cap_s=time_cap_s,
        conversion_job=conversion_job,
        dataset=dataset,
        **fields,
    )
    client = _state().client()
    created = client.benchmark(request)
    if detach:
        if as_json:
            _emit_json(created)
        else:
            click.echo(
                f"benchmark {created.job_id} started; see it with: "
                f"cvops benchmarks show {created.job_id}"
            )
        return
    cells = len(request.batch_sizes) * len(request.concurrency)
    with _live(as_json) as bars:
        tracker = progress.BenchmarkProgress(bars, created.job_id, cells)
        ended = progress.ends_with(progress.BENCHMARK_ENDS, "job_id", created.job_id)
        _follow(client, created.correlation_id, ended, tracker, bars)
    _benchmark_result(client.show_benchmark(created.job_id), as_json)


def _benchmark_result(benchmark: BenchmarkView, as_json: bool) -> None:
    if as_json:
        _emit_json(benchmark)
    else:
        _show(views.benchmark_view(benchmark))
    if benchmark.status == "failed":
        _fail(f"benchmark failed: {benchmark.reason or 'no reason given'}")


@cli.group()
def benchmarks() -> None:
    """Benchmark jobs."""


@benchmarks.command("show")
@click.argument("job_id")
@json_option
def benchmarks_show(job_id: str, as_json: bool) -> None:
    """A benchmark's rows and its recommendation."""
    _benchmark_result(_state().client().show_benchmark(job_id), as_json)


# -- reports ----------------------------------------------------------------------------


@cli.command()
@click.argument("ref", metavar="MODEL:VERSION")
@click.option("--open", "open_", is_flag=True, help="Open the HTML report in a web browser.")
@click.option("--pdf", is_flag=True, help="Download the PDF too.")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, writable=True),
    default=".",
    show_default=True,
    help="Directory to write the files in.",
)
@json_option
def report(ref: str, open_: bool, pdf: bool, output: str, as_json: bool) -> None:
    """Download a version's newest report and list its sections.

    Writes MODEL-vVERSION-report.html (one self-contained page: it works offline), with --pdf
    also MODEL-vVERSION-report.pdf, and prints which sections have results and what each
    missing one waits for. A version without a report yet exits 1.
    """
    name, version = _parse_ref(ref, need_version=True)
    assert version is not None
    client = _state().client()
    found = client.report(name, version)
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    written = [client.download_report(name, version, "html", directory)]
    if pdf:
        written.append(client.download_report(name, version, "pdf", directory))
    if as_json:
        _emit_json(found)
        for path in written:  # stdout stays JSON only
            click.echo(f"wrote {path}", err=True)
    else:
        _show(views.report_view(found, written))
    if open_:
        webbrowser.open(written[0].resolve().as_uri())


# -- terminal UI --------------------------------------------------------------------------


@cli.command()
@click.option(
    "--router-metrics",
    envvar="CVOPS_ROUTER_METRICS_URL",
    metavar="URL",
    help="The inference router's metrics, for live latency "
    "[env CVOPS_ROUTER_METRICS_URL; default: port 8002 on the gateway's host]",
)
def tui(router_metrics: str | None) -> None:
    """Full-screen terminal UI: models, data sets, live jobs, benchmarks, deployments, users.

    Uses the gateway URL and token `cvops login` stored (or CVOPS_URL / CVOPS_TOKEN). Keys:
    1-6 tabs, arrows or j/k, Enter opens, Escape goes back, r refreshes, ? keys, q quits.
    """
    from cvops.client.tui import Connection, CvopsApp  # textual loads only for this command
    from cvops.client.tui.session import router_metrics_beside

    state = _state()
    stored = state.config if _same_url(state.config.url, state.url) else ClientConfig()
    connection = Connection(
        url=state.url,
        token=state.token(),
        username=stored.username,
        expires_at=None if os.environ.get("CVOPS_TOKEN") else stored.expires_at,
        router_metrics_url=router_metrics or router_metrics_beside(state.url),
        transport=state.transport,
    )
    CvopsApp(connection).run()


# -- projections --------------------------------------------------------------------------


@cli.group()
def projections() -> None:
    """Operator tools for the services' SQLite projections (talk to NATS directly)."""


def _ops() -> Any:
    """``cvops.client.rebuild``, which needs cvops-core (the ``ops`` extra)."""
    try:
        from cvops.client import rebuild
    except ImportError as err:  # cvops-core is an optional dependency of the client
        raise CvopsError(
            0, "missing_dependency", f"{err}; install it with: pip install 'cvops-client[ops]'"
        ) from err
    return rebuild


@projections.command("rebuild")
@click.argument("service")
@click.option("--force", is_flag=True, help="Rebuild even though the service looks running.")
def projections_rebuild(service: str, force: bool) -> None:
    """Throw away SERVICE's projection and replay the event log into it.

    The home is ``CVOPS_HOME`` (default ``.cvops`` in the working directory), as for
    ``./justw up``; it must exist already: run from where ``up`` ran, or set it.
    """
    rebuild = _ops()
    try:
        applied, db_path = rebuild.rebuild_service(service, force=force)
    except rebuild.UnknownService as err:
        raise click.BadParameter(str(err), param_hint="SERVICE") from err
    click.echo(f"rebuilt {service} projection {db_path}: {applied} events applied")


@projections.command("status")
@json_option
def projections_status(as_json: bool) -> None:
    """Each service's projection: its checkpoint, and the event it is stuck at, if any.

    Exits 1 when a projection is stuck (resolve it with ``cvops projections skip``).
    """
    rows = _ops().service_states()
    if as_json:
        click.echo(
            msgspec.json.encode(
                [
                    {
                        "service": row.label,
                        "worker": row.worker,
                        "file": str(row.path),
                        "exists": row.state is not None,
                        "checkpoint": row.state.checkpoint if row.state else 0,
                        "stuck": vars(row.state.stuck) if row.state and row.state.stuck else None,
                        "quarantined": [vars(q) for q in row.state.quarantined]
                        if row.state
                        else [],
                    }
                    for row in rows
                ]
            ).decode()
        )
    else:
        for row in rows:
            state = row.state
            if state is None:
                click.echo(f"{row.label}: no projection yet ({row.path})")
                continue
            skipped = ", ".join(str(q.seq) for q in state.quarantined) or "none"
            click.echo(
                f"{row.label}: checkpoint {state.checkpoint}, skipped seqs: {skipped} ({row.path})"
            )
            if state.stuck is not None:
                stuck = state.stuck
                click.echo(f"  STUCK at seq {stuck.seq} ({stuck.type}): {stuck.reason}")
                click.echo(f"  fix the cause and restart {row.service}, or skip the event:")
                click.echo(f"  cvops projections skip {row.service} {stuck.seq} --reason TEXT")
    if any(row.state is not None and row.state.stuck is not None for row in rows):
        click.get_current_context().exit(1)


@projections.command("skip")
@click.argument("service")
@click.argument("seq", type=click.IntRange(min=1))
@click.option("--reason", required=True, help="Why the event is passed over (kept on record).")
def projections_skip(service: str, seq: int, reason: str) -> None:
    """Quarantine the event at stream sequence SEQ for SERVICE's projection.

    The projection then passes over it without applying it: the running service within a
    second, a restart and every ``cvops projections rebuild`` the same way. What the event
    would have changed is lost to this projection; the log itself keeps it.
    """
    rebuild = _ops()
    try:
        recorded, state = rebuild.skip_event(service, seq, reason)
    except rebuild.UnknownService as err:
        raise click.BadParameter(str(err), param_hint="SERVICE") from err
    click.echo(f"{service}: seq {recorded.seq} quarantined ({recorded.reason})")
    stuck = state.stuck if state is not None else None
    if stuck is None:
        click.echo(f"note: {service}'s projection is not stuck; seq {seq} will be skipped anyway")
    elif stuck.seq != seq:
        click.echo(f"note: {service}'s projection is stuck at seq {stuck.seq}, not {seq}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cvops")

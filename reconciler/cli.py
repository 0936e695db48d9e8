"""Command line: the only module that prints and picks exit codes.

Heavy modules (pydantic models, httpx, the planner) are imported inside the
commands so that `reconciler --help` starts fast.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from reconciler import __version__, defaults

if TYPE_CHECKING:
    from reconciler.client import Client
    from reconciler.executor import ProgressEvent
    from reconciler.loader import LoadedDesired
    from reconciler.plan import Plan

F = TypeVar("F", bound=Callable[..., Any])

# `status` exits with this when a mount does not answer on some node, runs another version
# or binary than its pin says, or a connection is pinned to an entry the catalog lacks.
STATUS_UNHEALTHY = 2


class UsageFailure(click.ClickException):
    """An error already explained to the user: exit 1 with its message, no traceback."""

    exit_code = 1

    def __init__(self, message: str, *, documented: bool = False) -> None:
        super().__init__(message)
        # Whether stdout already holds the JSON document of this failure (`--json`).
        self.documented = documented

    def show(self, file: Any = None) -> None:
        click.echo(click.style("error: ", fg="red", bold=True) + self.message, err=True)


def _fail(message: str, *, documented: bool = False) -> NoReturn:
    raise UsageFailure(message, documented=documented)


def _echo_error_document(error: BaseException) -> None:
    """The one shape of a `--json` failure on stdout (schemas/error.schema.json)."""
    from reconciler.documents import ErrorDocument, ErrorKind, FileProblem
    from reconciler.errors import ApiError, DesiredStateError, PlanFileError, PlanRefused

    problems: list[FileProblem] = []
    if isinstance(error, DesiredStateError):
        kind = ErrorKind.DESIRED_STATE
        problems = [
            FileProblem(file=p.file, line=p.line, column=p.column, message=p.message)
            for p in error.problems
        ]
    elif isinstance(error, click.ClickException):
        kind = ErrorKind.USAGE
    elif isinstance(error, PlanFileError):
        kind = ErrorKind.PLAN_FILE
    elif isinstance(error, ApiError):
        kind = ErrorKind.SERVER
    elif isinstance(error, PlanRefused):
        kind = ErrorKind.REFUSED
    else:
        kind = ErrorKind.OTHER
    message = error.format_message() if isinstance(error, click.ClickException) else str(error)
    document = ErrorDocument(error=message, kind=kind, problems=problems)
    click.echo(document.to_json(), nl=False)


_INTERRUPTED = "reconciler.interrupted"


class _Signals:
    """SIGINT and SIGTERM alike (a CI runner cancelling a job sends SIGTERM).

    Until `between_actions()`, either stops the command at once (KeyboardInterrupt):
    nothing was written yet. From then on, the first lets the running action finish
    and no other start (the executor asks `requested` between two actions); a second
    stops at once, inside the action.
    """

    def __init__(self) -> None:
        self.requested = False
        self._cooperative = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def between_actions(self) -> None:
        self._cooperative = True

    def _handle(self, signum: int, _frame: object) -> None:
        if not self._cooperative:
            raise KeyboardInterrupt
        if self.requested:
            click.get_current_context().meta[_INTERRUPTED] = (
                "stopped inside an action: the server may hold part of it; "
                "a re-run converges (apply again)"
            )
            raise KeyboardInterrupt
        self.requested = True
        click.echo(
            f"{signal.Signals(signum).name}: stopping after the running action "
            "(send it again to stop at once)",
            err=True,
        )


def reports_errors(command: F) -> F:
    """Turn every ReconcilerError into `error: …` on stderr and exit 1; with `--json`,
    an error document on stdout as well."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reconciler.errors import ReconcilerError

        as_json = bool(kwargs.get("as_json")) or kwargs.get("output_format") == "json"
        try:
            return command(*args, **kwargs)
        except (KeyboardInterrupt, click.exceptions.Abort):
            # SIGINT or SIGTERM (`_Signals`) while nothing was written yet, a second one
            # inside an action, or Ctrl-C at a prompt: no traceback; with --json, a document.
            from reconciler.documents import ErrorDocument, ErrorKind

            context = click.get_current_context()
            message = "interrupted: " + context.meta.get(
                _INTERRUPTED, "stopped before any write: nothing was changed"
            )
            if as_json:
                click.echo(
                    ErrorDocument(error=message, kind=ErrorKind.INTERRUPTED).to_json(), nl=False
                )
            _fail(message, documented=as_json)
        except UsageFailure as failure:
            if as_json and not failure.documented:
                _echo_error_document(failure)
            raise
        except ReconcilerError as error:
            if as_json:
                _echo_error_document(error)
            _fail(str(error), documented=as_json)

    return wrapper  # type: ignore[return-value]


class _ContractGroup(click.Group):
    """Usage errors (unknown flag, missing file or argument) exit 1 like every other error,
    so that exit 2 only ever means `plan --detailed-exitcode` found changes. Asked for
    `--json`, they print an error document on stdout too."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _usage_errors_exit_1(wants_json=_wants_json(args)):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _usage_errors_exit_1(wants_json=_wants_json(ctx.args)):
            return super().invoke(ctx)


def _wants_json(args: list[str]) -> bool:
    """Whether the command line asks for JSON, read before it is parsed (it may not parse)."""
    pairs = itertools.pairwise(args)
    return "--json" in args or "--format=json" in args or ("--format", "json") in pairs


@contextlib.contextmanager
def _usage_errors_exit_1(*, wants_json: bool) -> Iterator[None]:
    try:
        yield
    except _UsageError:
        raise
    except click.exceptions.NoArgsIsHelpError as error:
        error.show()  # a bare `reconciler`: the help, on stderr
        raise SystemExit(1) from None
    except click.UsageError as error:
        if wants_json:
            _echo_error_document(error)
        raise _UsageError(error.format_message(), error.ctx) from None


class _UsageError(click.UsageError):
    exit_code = 1


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    ctx.meta[f"reconciler.{param.name}"] = value


def connection_options(command: F) -> F:
    """--address, --namespace and --token-file, following the Vault/OpenBao CLI conventions;
    --target/--targets name a cluster of a targets file instead of --address."""
    command = click.option(
        "--targets",
        type=click.Path(dir_okay=False, path_type=Path),
        default="targets.yaml",
        show_default=True,
        expose_value=False,
        callback=_remember,
        help="The targets file --target reads.",
    )(command)
    command = click.option(
        "--target",
        "target_name",
        default=None,
        expose_value=False,
        callback=_remember,
        help="Take the address (and CA) from this entry of the targets file.",
    )(command)
    command = click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Read the token from this file (default: BAO_TOKEN/VAULT_TOKEN, ~/.vault-token).",
    )(command)
    command = click.option(
        "--namespace",
        default=None,
        help="Namespace for mount calls (default: BAO_NAMESPACE/VAULT_NAMESPACE).",
    )(command)
    return click.option(
        "--address",
        default=None,
        help="Server address (default: BAO_ADDR/VAULT_ADDR).",
    )(command)


def _client(
    address: str | None,
    namespace: str | None,
    token_file: Path | None,
    meta: dict[str, Any] | None = None,
) -> Client:
    """A client for --address, or for --target (`meta`: the command's context, for
    callers outside it such as watch mode's passes)."""
    import os

    from reconciler.client import Client

    environ: dict[str, str] | None = None
    if meta is None:
        context = click.get_current_context(silent=True)
        meta = context.meta if context is not None else {}
    if meta.get("reconciler.target_name"):
        from reconciler.targets import load_target

        if address:
            _fail("--target names the address: drop --address")
        target = load_target(meta["reconciler.target_name"], Path(meta["reconciler.targets"]))
        address = target.address
        if target.ca_cert:
            environ = {**os.environ, "BAO_CACERT": target.ca_cert}
    return Client.from_environment(
        address=address, namespace=namespace, token_file=token_file, environ=environ
    )


def _load(path: Path, max_file_size: int) -> LoadedDesired:
    from reconciler.loader import load_desired

    return load_desired(path, max_file_size=max_file_size)


reload_unmanaged_option = click.option(
    "--reload-unmanaged",
    is_flag=True,
    help="Also reload undeclared mounts left on the old binary of an updated entry "
    "(the file setting reload_unmanaged: true).",
)


def _reloading_unmanaged(loaded: LoadedDesired, reload_unmanaged: bool) -> LoadedDesired:
    """`loaded` with its `reload_unmanaged` setting on when the flag asks for it."""
    import dataclasses

    if not reload_unmanaged:
        return loaded
    settings = loaded.state.settings.model_copy(update={"reload_unmanaged": True})
    return dataclasses.replace(loaded, state=loaded.state.model_copy(update={"settings": settings}))


def _parse_replace(values: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    from reconciler.planner import parse_catalog_target

    parsed = []
    for value in values:
        try:
            parsed.append(parse_catalog_target(value))
        except ValueError as error:
            _fail(f"--replace {value!r}: {error}")
    return tuple(parsed)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float:
    """Every duration flag: the one grammar of `reconciler.durations`; absent is 0."""
    from reconciler.durations import parse_seconds

    if value is None:
        return 0.0
    try:
        return parse_seconds(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _colour() -> bool:
    return sys.stdout.isatty()


_VERBOSITY = "reconciler.verbosity"


def _count_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """-v and -q count wherever they stand, before the command name or after it."""
    if not value:
        return
    root = ctx.find_root()
    step = value if param.name == "verbose" else -value
    root.meta[_VERBOSITY] = root.meta.get(_VERBOSITY, 0) + step
    logging.getLogger().setLevel(_log_level(root.meta[_VERBOSITY]))


def _log_level(verbosity: int) -> int:
    # -q: errors only; default: warnings; -v: info; -vv: debug.
    return logging.WARNING - 10 * max(-1, min(verbosity, 2))


def _verbosity() -> int:
    """-v count minus -q count, wherever they were given."""
    context = click.get_current_context(silent=True)
    return 0 if context is None else int(context.find_root().meta.get(_VERBOSITY, 0))


def verbosity_options(command: F) -> F:
    command = click.option(
        "-q",
        "--quiet",
        count=True,
        expose_value=False,
        callback=_count_verbosity,
        help="Log less: errors only.",
    )(command)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_count_verbosity,
        help="Log more (twice: debug); list every warning; progress lines off a terminal.",
    )(command)


@click.group(cls=_ContractGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@verbosity_options
def cli() -> None:
    """Keep an OpenBao/Vault plugin catalog and mount table equal to a YAML file."""
    logging.basicConfig(
        level=_log_level(_verbosity()),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


max_file_size_option = click.option(
    "--max-file-size",
    type=int,
    default=defaults.MAX_FILE_SIZE,
    show_default=True,
    help="Refuse desired-state files larger than this many bytes.",
)


def _server_release(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """`--server-version`: a release whose built-in list ships with this version."""
    if not value:
        return ""
    from reconciler.releases import UnknownRelease, known_release

    try:
        return known_release(value)
    except UnknownRelease as error:
        raise click.BadParameter(str(error)) from None


def _node_option(command: F) -> F:
    return click.option(
        "--node",
        "nodes",
        multiple=True,
        help="A node's API address (repeatable); default: the nodes sys/ha-status lists.",
    )(command)


@cli.command("plan")
@verbosity_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the plan (JSON) here, for `apply PLAN.json`.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown"]),
    default=None,
    help="text (default), json (schemas/plan.schema.json) or markdown (a review document "
    "for a pull-request comment or a CI job summary, risks first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (--format json).")
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there is nothing to do, 2 when there are actions, 1 on error.",
)
@click.option("--replace", multiple=True, metavar="TYPE/NAME/VERSION", help="Force re-register.")
@click.option(
    "--server-version",
    metavar="RELEASE",
    default="",
    callback=_server_release,
    help="Preflight for a server upgrade: name every mount (every namespace) that runs a "
    "built-in this OpenBao release does not ship, and whether the file replaces it.",
)
@_node_option
@reload_unmanaged_option
@max_file_size_option
@connection_options
@reports_errors
def plan_command(
    file: Path,
    out: Path | None,
    output_format: str | None,
    as_json: bool,
    detailed_exitcode: bool,
    replace: tuple[str, ...],
    server_version: str,
    nodes: tuple[str, ...],
    reload_unmanaged: bool,
    max_file_size: int,
    address: str | None,
    namespace: str | None,
    token_file: Path | None,
) -> None:
    """Show what apply would change on the server."""
    from reconciler.reconcile import plan_for

    if as_json and output_format not in (None, "json"):
        _fail(f"--json is --format json: drop one of --json and --format {output_format}")
    output_format = "json" if as_json else output_format or "text"
    if out is not None and not out.parent.is_dir():
        # Said before the server is read: the plan could not be kept anyway.
        _fail(f"cannot write the plan to {out}: no directory {out.parent}: choose another --out")
    loaded = _reloading_unmanaged(_load(file, max_file_size), reload_unmanaged)
    with _Signals():
        client = _client(address, namespace, token_file)
        the_plan = plan_for(
            client,
            loaded,
            replace=_parse_replace(replace),
            nodes=nodes,
            server_version=server_version,
        )
        # Shown with the path as given; saved relative to the plan (below).
        shown = the_plan
        if out is not None:
            the_plan = _save_plan(the_plan, file, out, loaded.sha256)
    if output_format == "json":
        click.echo(the_plan.to_json(), nl=False)
    elif output_format == "markdown":
        from reconciler.review import render_markdown

        click.echo(render_markdown(shown), nl=False)
    else:
        from reconciler.render import render_plan

        click.echo(render_plan(shown, colour=_colour(), verbose=_verbosity() > 0), nl=False)
        if out is not None:
            click.echo(f"Saved to {out}; apply it with: reconciler apply {out}")
    if the_plan.errors:
        sys.exit(1)
    if detailed_exitcode and the_plan.actions:
        sys.exit(2)


def _save_plan(the_plan: Plan, desired: Path, out: Path, sha256: str) -> Plan:
    """Write the plan to `out` whole or not at all; the plan as saved."""
    import tempfile

    from reconciler.plan import DesiredSource
    from reconciler.reconcile import path_for_saved_plan

    # Recorded relative to the plan, so the plan travels with the file it names.
    source = DesiredSource(path=path_for_saved_plan(desired, out), sha256=sha256)
    saved = the_plan.model_copy(update={"desired": source})
    temporary: Path | None = None
    try:
        # A temporary file beside it, renamed over it: an interruption or a full disk
        # never leaves half a plan for `apply` to choke on.
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=out.parent, prefix=f".{out.name}.", delete=False
        ) as stream:
            temporary = Path(stream.name)
            stream.write(saved.to_json())
        temporary.replace(out)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        _fail(f"cannot write the plan to {out}: {error.strerror or error}: choose another --out")
    return saved


@cli.command("apply")
@verbosity_options
@click.argument(
    "target", metavar="FILE|PLAN.json", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--yes", "-y", is_flag=True, help="Do not prompt (required without a terminal).")
@click.option("--allow-destroy", is_flag=True, help="Allow disable/replace (up to max_destroy).")
@click.option("--replace", multiple=True, metavar="TYPE/NAME/VERSION", help="Force re-register.")
@click.option(
    "--rollback-on-failure/--no-rollback",
    default=True,
    show_default=True,
    help="Bring every mount of an upgrade that fails back to the binary it ran before, "
    "on every node (--no-rollback leaves it as the failure left it).",
)
@click.option(
    "--lock-timeout",
    default=None,
    callback=_duration,
    help="Wait this long (e.g. 30s) for another apply to finish; default: fail at once.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the plan and result as JSON on stdout."
)
@_node_option
@reload_unmanaged_option
@max_file_size_option
@connection_options
@reports_errors
def apply_command(
    target: Path,
    yes: bool,
    allow_destroy: bool,
    replace: tuple[str, ...],
    rollback_on_failure: bool,
    lock_timeout: float,
    as_json: bool,
    nodes: tuple[str, ...],
    reload_unmanaged: bool,
    max_file_size: int,
    address: str | None,
    namespace: str | None,
    token_file: Path | None,
) -> None:
    """Apply a desired-state file (or a saved plan) and verify the result."""
    import dataclasses
    import json

    from reconciler.executor import ApplyOptions
    from reconciler.reconcile import PassHooks, Verdict, load_target, run_pass
    from reconciler.render import render_plan, summary

    replace_keys = _parse_replace(replace)
    target_input = load_target(target, max_file_size)
    target_input = dataclasses.replace(
        target_input, loaded=_reloading_unmanaged(target_input.loaded, reload_unmanaged)
    )
    out = sys.stderr if as_json else sys.stdout

    def show(the_plan: Plan) -> None:
        # A saved plan asked for as JSON was shown when it was made.
        if not as_json or target_input.saved is None:
            text = render_plan(
                the_plan,
                allow_destroy=allow_destroy,
                colour=out.isatty(),
                verbose=_verbosity() > 0,
            )
            click.echo(text, nl=False, file=out)

    signals = _Signals()

    def confirm(the_plan: Plan, server: str) -> bool:
        if not yes:
            if not sys.stdin.isatty():
                _fail("not a terminal: pass --yes to apply without a prompt")
            if not click.confirm(
                f"Apply {summary(the_plan, allow_destroy)} to {server}?", default=False
            ):
                return False
        signals.between_actions()
        return True

    options = ApplyOptions(
        allow_destroy=allow_destroy,
        rollback_on_failure=rollback_on_failure,
        replace=replace_keys,
        nodes=nodes,
        stop_requested=lambda: signals.requested,
    )
    hooks = PassHooks(on_plan=show, confirm=confirm, progress=_print_progress)
    with signals:
        client = _client(address, namespace, token_file)
        result = run_pass(client, target_input, options, hooks, lock_timeout=lock_timeout)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    if result.verdict is Verdict.INTERRUPTED:
        applied = [f"{a.kind.value} {a.target}" for a in result.applied]
        listed = ", ".join(applied[:10]) + (
            f" and {len(applied) - 10} more" if len(applied) > 10 else ""
        )
        again = (
            # The server moved since the saved plan: it would be refused as stale.
            "make a new plan (reconciler plan FILE --out PLAN.json) and apply it"
            if target_input.saved is not None
            else f"reconciler apply {target}"
        )
        _fail(
            f"interrupted: {len(applied)} of {len(result.runnable)} actions applied"
            + (f" ({listed})" if applied else "")
            + f"; the rest did not run and nothing was verified. A re-run converges: {again}",
            documented=as_json,
        )
    if result.verdict is Verdict.PLAN_ERRORS:
        _fail("the plan has errors: nothing was changed", documented=as_json)
    if result.verdict is Verdict.REFUSED:
        _fail(
            "refused actions (marked !): nothing was changed"
            + ("" if allow_destroy else "; pass --allow-destroy to allow disable/replace"),
            documented=as_json,
        )
    if result.verdict is Verdict.DECLINED:
        _fail("apply declined: nothing was changed", documented=as_json)
    if result.verdict is Verdict.FORBIDDEN:
        _fail(
            "the token cannot write what the plan changes: nothing was changed; give it the "
            f"policy `reconciler policy {target_input.loaded.path}` prints, or use another token:\n"
            + "\n".join(f"  {p}" for p in result.problems()),
            documented=as_json,
        )
    for line in result.rolled_back:
        click.echo(f"rolled back: {line}", err=True)
    if not result.converged:
        _fail(
            "apply did not converge:\n" + "\n".join(f"  {p}" for p in result.problems()),
            documented=as_json,
        )
    if result.applied and not as_json:
        click.echo(
            click.style("Applied and verified: ", fg="green", bold=_colour())
            + summary(result.plan, allow_destroy)
            + "."
        )


def _print_progress(event: ProgressEvent) -> None:
    """Progress on a terminal (or with -v); a log or CI job gets the plan and the result."""
    from reconciler.render import progress_line

    if not (sys.stderr.isatty() or _verbosity() > 0):
        return
    line = progress_line(event)
    if line is not None:
        click.echo(f"  {line}…" if event.action is None else line, err=True)


@cli.command("watch")
@verbosity_options
# Not `exists=True`: a file missing at start is waited for, like one deleted later.
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--interval",
    default=f"{defaults.WATCH_INTERVAL:g}s",
    show_default=True,
    callback=_duration,
    metavar="DURATION",
    help="Resync this often even when the file does not change (e.g. 30s, 5m).",
)
@click.option("--allow-destroy", is_flag=True, help="Apply disable/replace (up to max_destroy).")
@click.option(
    "--debounce",
    default=f"{defaults.WATCH_DEBOUNCE * 1000:g}ms",
    show_default=True,
    callback=_duration,
    metavar="DURATION",
    help="Wait this long after the last file event before a pass.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus /metrics and /healthz on this port.",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics server binds to (0.0.0.0 for every interface).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line.",
)
@max_file_size_option
@connection_options
@reports_errors
def watch_command(
    file: Path,
    interval: float,
    allow_destroy: bool,
    debounce: float,
    metrics_port: int | None,
    metrics_address: str,
    log_format: str,
    max_file_size: int,
    address: str | None,
    namespace: str | None,
    token_file: Path | None,
) -> None:
    """Reconcile on every change of FILE and every --interval, until SIGTERM/SIGINT."""
    from reconciler.watch import (
        MetricsServer,
        Watcher,
        WatchOptions,
        configure_logging,
        run_until_signalled,
    )

    if interval <= 0:
        _fail("--interval must be more than 0")
    if not address and not any(os.environ.get(n) for n in ("BAO_ADDR", "VAULT_ADDR")):
        # A daemon must not retry a guessed default address forever.
        _fail("no server address: set BAO_ADDR (or VAULT_ADDR), or pass --address URL")
    # Fail now on settings that no retry can fix (no address, unreadable token file),
    # before the process's logging is taken over.
    _client(address, namespace, token_file)
    verbosity = _verbosity()
    configure_logging(
        log_format,
        logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO,
    )
    watcher = Watcher(
        file,
        functools.partial(
            _client, address, namespace, token_file, dict(click.get_current_context().meta)
        ),
        WatchOptions(
            interval=interval,
            allow_destroy=allow_destroy,
            debounce=debounce,
            max_file_size=max_file_size,
            token_file=token_file,
        ),
    )
    metrics_server = None
    if metrics_port is not None:
        try:
            metrics_server = MetricsServer(watcher.metrics, metrics_address, metrics_port).start()
        except OSError as error:
            _fail(f"cannot serve metrics on {metrics_address}:{metrics_port}: {error.strerror}")

    if not run_until_signalled(watcher, metrics_server):
        sys.exit(1)


@cli.command("validate")
@verbosity_options
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@max_file_size_option
def validate_command(files: tuple[Path, ...], max_file_size: int) -> None:
    """Check each FILE (syntax, schema, references, plugin hashes); contacts no server."""
    from reconciler.errors import DesiredStateError
    from reconciler.loader import load_desired
    from reconciler.resolver import SHIPPED_BUILTINS

    invalid = False
    for file in files:
        try:
            loaded = load_desired(file, max_file_size=max_file_size, builtins=SHIPPED_BUILTINS)
        except DesiredStateError as error:
            for problem in error.problems:
                click.echo(str(problem), err=True)
            invalid = True
            continue
        state = loaded.state
        tree = state.namespace_tree()
        mounts = len(state.secrets) + len(state.auth)
        mounts += sum(len(namespace.secrets) + len(namespace.auth) for _, namespace, _ in tree)
        where = f" in {len(tree) + 1} namespaces" if tree else ""
        click.echo(f"{file}: valid ({len(state.plugins)} plugins, {mounts} mounts{where})")
        server_owned = sum(entry.managed_by == "server" for entry in state.plugins)
        if server_owned:
            click.echo(
                f"{file}: {server_owned} plugin entries are owned by the server configuration "
                "(managed_by: server): whether the catalog holds them, from a `plugin` stanza, "
                "cannot be checked offline; `plan` checks them against the catalog"
            )
    if invalid:
        sys.exit(1)


@cli.command("completion")
@verbosity_options
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell: str) -> None:
    """Print the shell completion script, e.g. `eval "$(reconciler completion bash)"`."""
    from click.shell_completion import get_completion_class

    completion_class = get_completion_class(shell)
    assert completion_class is not None  # every choice is a shell click supports
    click.echo(completion_class(cli, {}, "reconciler", "_RECONCILER_COMPLETE").source())


@cli.command("policy")
@verbosity_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--read-only", is_flag=True, help="The policy `plan`, `status` and `export` need (no writes)."
)
@max_file_size_option
@reports_errors
def policy_command(file: Path, read_only: bool, max_file_size: int) -> None:
    """Print the least-privilege ACL policy (HCL) that `apply`, `watch`, `status` and
    `export` of FILE need (with --read-only: `plan`, `status` and `export`)."""
    from reconciler.loader import load_desired
    from reconciler.policy import policy_hcl
    from reconciler.resolver import SHIPPED_BUILTINS

    loaded = load_desired(file, max_file_size=max_file_size, builtins=SHIPPED_BUILTINS)
    click.echo(policy_hcl(loaded.state, read_only=read_only, source=file.name), nl=False)


@cli.command("export")
@verbosity_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the file here instead of to stdout.",
)
@connection_options
@reports_errors
def export_command(
    out: Path | None, address: str | None, namespace: str | None, token_file: Path | None
) -> None:
    """Write the server's catalog and mounts as a desired-state file (env cannot be exported)."""
    from reconciler.export import export_desired, unmanaged_settings
    from reconciler.state import read_live_state

    with _client(address, namespace, token_file) as client:
        live = read_live_state(client)
    text = export_desired(live)
    for setting in unmanaged_settings(live):
        click.echo(f"warning: not managed, kept on the server as it is: {setting}", err=True)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as error:
        _fail(f"cannot write {out}: {error.strerror or error}: choose another --out")
    click.echo(f"Exported to {out}; check it with: reconciler validate {out}", err=True)


@cli.command("status")
@verbosity_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schemas/status.schema.json).")
@_node_option
@connection_options
@reports_errors
def status_command(
    as_json: bool,
    nodes: tuple[str, ...],
    address: str | None,
    namespace: str | None,
    token_file: Path | None,
) -> None:
    """Show, per node, every mount that runs an external plugin or does not answer, and
    every database connection; exit 2 when something does not answer or is flagged."""
    from reconciler.nodes import discover_nodes
    from reconciler.nodestate import read_status
    from reconciler.render import status_text
    from reconciler.state import read_live_state

    with _client(address, namespace, token_file) as client:
        found = discover_nodes(client, nodes)
        document = read_status(client, found, read_live_state(client))
    if as_json:
        click.echo(document.model_dump_json(indent=2))
    else:
        click.echo(status_text(document), nl=False)
    if not document.healthy:
        sys.exit(STATUS_UNHEALTHY)


@cli.command("schema")
@verbosity_options
@click.option("--plan", "of_plan", is_flag=True, help="The schema of `plan --json` instead.")
@click.option("--apply", "of_apply", is_flag=True, help="The schema of `apply --json` instead.")
@click.option(
    "--error", "of_error", is_flag=True, help="The schema of the `--json` error document instead."
)
@click.option("--status", "of_status", is_flag=True, help="The schema of `status --json` instead.")
def schema_command(of_plan: bool, of_apply: bool, of_error: bool, of_status: bool) -> None:
    """Print the JSON Schema of the desired-state file (for editors and CI)."""
    if of_plan + of_apply + of_error + of_status > 1:
        _fail("choose one of --plan, --apply, --error and --status")
    if of_status:
        from reconciler.documents import status_schema_text

        click.echo(status_schema_text(), nl=False)
        return
    if of_plan:
        from reconciler.plan import plan_schema_text

        click.echo(plan_schema_text(), nl=False)
        return
    if of_apply or of_error:
        from reconciler.documents import apply_schema_text, error_schema_text

        click.echo(apply_schema_text() if of_apply else error_schema_text(), nl=False)
        return
    from reconciler.model import json_schema_text

    click.echo(json_schema_text(), nl=False)


@cli.command("demo")
@verbosity_options
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the server running afterwards and print BAO_ADDR/BAO_TOKEN to explore it.",
)
@click.option("--no-upgrade", is_flag=True, help="Stop after the first apply.")
@reports_errors
def demo_command(keep: bool, no_upgrade: bool) -> None:
    """Validate, plan, apply and upgrade the bundled examples on a throw-away OpenBao."""
    from reconciler.demo import run_demo

    run_demo(click.echo, upgrade=not no_upgrade, keep=keep, colour=_colour())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="reconciler")

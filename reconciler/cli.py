"""Command line: the only module that prints and picks exit codes.

Heavy modules (pydantic models, httpx, the planner) are imported inside the
commands so that `reconciler --help` starts fast.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
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


def reports_errors(command: F) -> F:
    """Turn every ReconcilerError into `error: …` on stderr and exit 1; with `--json`,
    an error document on stdout as well."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reconciler.errors import ReconcilerError

        as_json = bool(kwargs.get("as_json"))
        try:
            return command(*args, **kwargs)
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
        with _usage_errors_exit_1(wants_json="--json" in args):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _usage_errors_exit_1(wants_json="--json" in ctx.args):
            return super().invoke(ctx)


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


@click.group(cls=_ContractGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@click.option("-v", "--verbose", count=True, help="Log more (twice: debug).")
def cli(verbose: int) -> None:
    """Keep an OpenBao/Vault plugin catalog and mount table equal to a YAML file."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )


max_file_size_option = click.option(
    "--max-file-size",
    type=int,
    default=defaults.MAX_FILE_SIZE,
    show_default=True,
    help="Refuse desired-state files larger than this many bytes.",
)


def _node_option(command: F) -> F:
    return click.option(
        "--node",
        "nodes",
        multiple=True,
        help="A node's API address (repeatable); default: the nodes sys/ha-status lists.",
    )(command)


@cli.command("plan")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON on stdout.")
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there is nothing to do, 2 when there are actions, 1 on error.",
)
@click.option("--replace", multiple=True, metavar="TYPE/NAME/VERSION", help="Force re-register.")
@_node_option
@reload_unmanaged_option
@max_file_size_option
@connection_options
@reports_errors
def plan_command(
    file: Path,
    out: Path | None,
    as_json: bool,
    detailed_exitcode: bool,
    replace: tuple[str, ...],
    nodes: tuple[str, ...],
    reload_unmanaged: bool,
    max_file_size: int,
    address: str | None,
    namespace: str | None,
    token_file: Path | None,
) -> None:
    """Show what apply would change on the server."""
    from reconciler.reconcile import plan_for

    loaded = _reloading_unmanaged(_load(file, max_file_size), reload_unmanaged)
    client = _client(address, namespace, token_file)
    the_plan = plan_for(client, loaded, replace=_parse_replace(replace), nodes=nodes)
    if out is not None:
        from reconciler.plan import DesiredSource
        from reconciler.reconcile import path_for_saved_plan

        # Recorded relative to the plan, so the plan travels with the file it names.
        source = DesiredSource(path=path_for_saved_plan(file, out), sha256=loaded.sha256)
        the_plan = the_plan.model_copy(update={"desired": source})
        out.write_text(the_plan.to_json())
    if as_json:
        click.echo(the_plan.to_json(), nl=False)
    else:
        from reconciler.render import render_plan

        click.echo(render_plan(the_plan, colour=_colour()), nl=False)
        if out is not None:
            click.echo(f"Saved to {out}; apply it with: reconciler apply {out}")
    if the_plan.errors:
        sys.exit(1)
    if detailed_exitcode and the_plan.actions:
        sys.exit(2)


@cli.command("apply")
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
    client = _client(address, namespace, token_file)
    out = sys.stderr if as_json else sys.stdout

    def show(the_plan: Plan) -> None:
        # A saved plan asked for as JSON was shown when it was made.
        if not as_json or target_input.saved is None:
            text = render_plan(the_plan, allow_destroy=allow_destroy, colour=out.isatty())
            click.echo(text, nl=False, file=out)

    def confirm(the_plan: Plan, server: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            _fail("not a terminal: pass --yes to apply without a prompt")
        return click.confirm(
            f"Apply {summary(the_plan, allow_destroy)} to {server}?", default=False
        )

    options = ApplyOptions(
        allow_destroy=allow_destroy,
        rollback_on_failure=rollback_on_failure,
        replace=replace_keys,
        nodes=nodes,
    )
    hooks = PassHooks(on_plan=show, confirm=confirm, progress=_print_progress)
    result = run_pass(client, target_input, options, hooks, lock_timeout=lock_timeout)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
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

    verbose = click.get_current_context().find_root().params.get("verbose") or 0
    if not (sys.stderr.isatty() or verbose):
        return
    line = progress_line(event)
    if line is not None:
        click.echo(f"  {line}…" if event.action is None else line, err=True)


@cli.command("watch")
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
    verbose = click.get_current_context().find_root().params.get("verbose") or 0
    configure_logging(log_format, logging.DEBUG if verbose else logging.INFO)
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
        mounts = len(state.secrets) + len(state.auth)
        click.echo(f"{file}: valid ({len(state.plugins)} plugins, {mounts} mounts)")
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
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell: str) -> None:
    """Print the shell completion script, e.g. `eval "$(reconciler completion bash)"`."""
    from click.shell_completion import get_completion_class

    completion_class = get_completion_class(shell)
    assert completion_class is not None  # every choice is a shell click supports
    click.echo(completion_class(cli, {}, "reconciler", "_RECONCILER_COMPLETE").source())


@cli.command("policy")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--read-only", is_flag=True, help="The policy `plan` needs (no writes).")
@max_file_size_option
@reports_errors
def policy_command(file: Path, read_only: bool, max_file_size: int) -> None:
    """Print the least-privilege ACL policy (HCL) that `apply` (or `plan`) of FILE needs."""
    from reconciler.loader import load_desired
    from reconciler.policy import policy_hcl
    from reconciler.resolver import SHIPPED_BUILTINS

    loaded = load_desired(file, max_file_size=max_file_size, builtins=SHIPPED_BUILTINS)
    click.echo(policy_hcl(loaded.state, read_only=read_only, source=file.name), nl=False)


@cli.command("export")
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
    """Show, per node, what every mount on an external plugin has, runs and whether it answers."""
    import json

    from reconciler.nodes import discover_nodes
    from reconciler.nodestate import read_status
    from reconciler.state import read_live_state

    with _client(address, namespace, token_file) as client:
        found = discover_nodes(client, nodes)
        statuses = read_status(client, found, read_live_state(client))
        server = client.address
    if as_json:
        document = {
            "format_version": 1,
            "server": server,
            "nodes": [{"address": n.address, "active": n.active} for n in found],
            "mounts": [status.to_dict() for status in statuses],
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"{server}: {len(found)} node(s)")
    if not statuses:
        click.echo("no mount runs an external plugin")
    for status in statuses:
        pinned = status.version or "(unpinned)"
        click.echo(f"{status.kind} {status.path} {status.plugin} {pinned}")
        for seen in status.nodes:
            role = "active " if seen.active else "standby"
            catalog = seen.catalog_sha256[:12] or "missing: " + seen.catalog_error
            running = f"{seen.running_version or '(unversioned)'} {seen.running_sha256[:12]}"
            answers = "answers" if seen.answers else "DOES NOT ANSWER: " + seen.error
            click.echo(f"  {role} {seen.node}  catalog {catalog}  runs {running}  {answers}")


@cli.command("schema")
@click.option("--plan", "of_plan", is_flag=True, help="The schema of `plan --json` instead.")
@click.option("--apply", "of_apply", is_flag=True, help="The schema of `apply --json` instead.")
@click.option(
    "--error", "of_error", is_flag=True, help="The schema of the `--json` error document instead."
)
def schema_command(of_plan: bool, of_apply: bool, of_error: bool) -> None:
    """Print the JSON Schema of the desired-state file (for editors and CI)."""
    if of_plan + of_apply + of_error > 1:
        _fail("choose one of --plan, --apply and --error")
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

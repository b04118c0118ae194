"""The ``solrl`` commands of the job service: run it (``serve api``), manage tokens (``admin``), and act as
its client (``submit``, ``jobs``, ``status``, ``logs``, ``cancel``, ``metrics``, ``artifacts``).

Client commands take the API URL and token from ``--url``/``--token`` or ``SOLRL_API_URL``/``SOLRL_TOKEN``.
``serve`` and ``admin`` import the service package lazily: the CLI is the one place where orchestration
reaches up into services, and only when one of those commands runs.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from orchestration.config import ConfigError, apply_override

if TYPE_CHECKING:
    from orchestration.api_client import ApiClient

console = Console(stderr=True)
serve_app = typer.Typer(no_args_is_help=True, help="Run the job service.")
admin_app = typer.Typer(no_args_is_help=True, help="Administer the job service (on its database directly).")
token_app = typer.Typer(no_args_is_help=True, help="Create, revoke and list API tokens.")
admin_app.add_typer(token_app, name="token")

UrlOpt = Annotated[str, typer.Option("--url", envvar="SOLRL_API_URL", help="Job service URL.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="SOLRL_TOKEN", help="API token.",
                                              show_default=False)]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="Default: SOLRL_DATABASE_URL, else SQLite "
                                                                  "under --home.", show_default=False)]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="Default: SOLRL_HOME, else ~/.solrl.",
                                              show_default=False)]
DEFAULT_URL = "http://127.0.0.1:8000"


def _settings(**values: Any):  # noqa: ANN202 - ApiSettings, imported lazily
    from services.api.settings import ApiSettings

    return ApiSettings(**{k: v for k, v in values.items() if v is not None})


def _fail(err: Exception, code: int = 1) -> typer.Exit:
    console.print(f"[red]{err}[/red]", highlight=False)
    return typer.Exit(code)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


# ---- serve ---------------------------------------------------------------------------------------
@serve_app.command("api")
def serve_api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    jobs_dir: Annotated[Path | None, typer.Option(help="Job output dirs (default HOME/jobs).",
                                                  show_default=False)] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", envvar="SOLRL_RAY_ADDRESS", show_default=False,
        help="Dashboard URL of an existing Ray cluster; without it a local head is started.")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="Logical CPUs of the local head (default: all).",
                                                   show_default=False)] = None,
    keep_ray: Annotated[bool, typer.Option("--keep-ray", help="Leave the local head (and its jobs) running "
                                                              "when the service stops.")] = False,
) -> None:
    """Run the REST job service (uvicorn). With no flags: SQLite under ~/.solrl and a local Ray cluster."""
    import uvicorn

    from services.api.embedded_ray import RayStartError, adopt, start_local_ray
    from services.api.main import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(home=home, database_url=database_url, jobs_dir=jobs_dir, ray_address=ray_address)
    head = None
    if settings.ray_address is None:
        state = settings.home / "ray-head.json"
        head = adopt(state)
        if head is None:
            console.print("Starting a local Ray cluster (dashboard and Jobs API)...")
            try:
                head = start_local_ray(num_cpus=num_cpus, log_path=settings.home / "ray-head.log", state_file=state)
            except RayStartError as err:
                raise _fail(err) from None
        console.print(f"Ray dashboard: {head.dashboard_url}")
        settings = settings.model_copy(update={"ray_address": head.dashboard_url})
    console.print(f"Database: {settings.database_url.split('@')[-1]}  jobs: {settings.job_root}")
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler it found: make that
    # handler an exit, so the `finally` below stops the head (Python's default would just die).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    finally:
        if head is not None and not keep_ray:
            console.print("Stopping the local Ray cluster...")
            head.stop()


# ---- admin ---------------------------------------------------------------------------------------
def _admin_session(home: Path | None, database_url: str | None):  # noqa: ANN202 - a Session
    from services.api.db import make_engine, migrate, session_factory

    settings = _settings(home=home, database_url=database_url)
    engine = make_engine(settings.database_url)
    migrate(engine)
    return session_factory(engine)()


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="Who the token is for.")],
    admin: Annotated[bool, typer.Option("--admin", help="May see and cancel every user's jobs.")] = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create a token; its secret is printed once, as the last line of stdout."""
    from services.api.auth import TokenError, create_token

    with _admin_session(home, database_url) as session:
        try:
            token, secret = create_token(session, name, admin=admin)
        except TokenError as err:
            raise _fail(err, 2) from None
    typer.echo(f"created token {token.id} for {token.name!r}{' (admin)' if token.is_admin else ''}; "
               "keep the secret below, it is not stored")
    typer.echo(secret)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str | None, typer.Option("--name", help="Revoke every active token of this name.")] = None,
    token_id: Annotated[str | None, typer.Option("--id", help="Revoke the token with this id.")] = None,
    home: HomeOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Revoke tokens: requests with them get 401 from then on."""
    from services.api.auth import TokenError, revoke_tokens

    with _admin_session(home, database_url) as session:
        try:
            revoked = revoke_tokens(session, name=name, token_id=token_id)
        except TokenError as err:
            raise _fail(err, 2) from None
    for token in revoked:
        typer.echo(f"revoked token {token.id} ({token.name})")


@token_app.command("list")
def token_list(home: HomeOpt = None, database_url: DbOpt = None) -> None:
    """List tokens (never their secrets)."""
    from services.api.auth import list_tokens

    with _admin_session(home, database_url) as session:
        table = Table("id", "name", "admin", "created", "revoked")
        for t in list_tokens(session):
            table.add_row(t.id, t.name, "yes" if t.is_admin else "", t.created_at.isoformat(timespec="seconds"),
                          t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "")
    Console().print(table)


# ---- client --------------------------------------------------------------------------------------
@contextmanager
def _api(url: str, token: str | None) -> Iterator[ApiClient]:
    """A client; the service's problems become a red message and exit code 2 (bad request) or 1."""
    # Imported here: httpx comes with the api/ray extras, and `solrl train` must work without them.
    from orchestration.api_client import ApiClient, ApiClientError

    if not token:
        raise _fail(ValueError("no token: pass --token or set SOLRL_TOKEN (see `solrl admin token create`)"), 2)
    client = ApiClient(url, token)
    try:
        yield client
    except ApiClientError as err:
        raise _fail(err, 2 if err.status in (400, 413, 422) else 1) from None
    finally:
        client.close()


def _spec_from(file: Path | None, kind: str | None, overrides: list[str]) -> tuple[str, dict[str, Any]]:
    """(kind, config) from a YAML/JSON file (a {kind, config} spec or a bare config) and --set overrides."""
    data: dict[str, Any] = {}
    if file is not None:
        loaded = yaml.safe_load(file.read_text()) if file.is_file() else None
        if not isinstance(loaded, dict):
            raise ValueError(f"{file} must exist and hold a mapping (a job config, or {{kind, config}})")
        data = loaded
    if set(data) <= {"kind", "config"} and "config" in data:
        kind = kind or data.get("kind")
        config = dict(data["config"] or {})
    else:
        config = dict(data)
        kind = kind or config.get("method")
    if not kind:
        raise ValueError("give --kind (e.g. solrl, eval) or a file with a kind or a method")
    for item in overrides:
        apply_override(config, item)
    return str(kind), config


def submit(
    file: Annotated[Path | None, typer.Argument(help="YAML/JSON job config, or {kind, config}.",
                                                show_default=False)] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Job kind (default: the file's kind or method).",
                                             show_default=False)] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="key.path=value (repeatable).")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key", help="Retry-safe submission.",
                                                        show_default=False)] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Submit a job; prints it as JSON."""
    try:
        job_kind, config = _spec_from(file, kind, overrides or [])
    except (ValueError, ConfigError) as err:
        raise _fail(err, 2) from None
    with _api(url, token) as client:
        job = client.submit(job_kind, config, idempotency_key)
    console.print(f"submitted job {job['id']} ({job['kind']}, {job['status']})")
    _echo_json(job)


def jobs(
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.", show_default=False)] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """List your jobs (all jobs with an admin token)."""
    with _api(url, token) as client:
        page = client.jobs(status=status, kind=kind, limit=limit)
    if as_json:
        _echo_json(page)
        return
    rows = [(j["id"], j["kind"], j["status"], str(j["last_checkpoint_step"] or ""),
             j["created_at"][:16].replace("T", " "), j["status_message"]) for j in page["data"]]
    table = Table()
    for i, name in enumerate(("id", "kind", "status", "step", "created")):  # ids get copied: never cut them
        table.add_column(name, no_wrap=True, min_width=max([len(name), *(len(r[i]) for r in rows)]))
    table.add_column("message", no_wrap=True, overflow="ellipsis")  # the only column that may shrink
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def status(job_id: Annotated[str, typer.Argument(help="Job id.")], url: UrlOpt = DEFAULT_URL,
           token: TokenOpt = None) -> None:
    """Print one job as JSON."""
    with _api(url, token) as client:
        _echo_json(client.job(job_id))


def logs(job_id: Annotated[str, typer.Argument(help="Job id.")],
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the job ends; exit 0 only "
                                                                     "if it succeeded.")] = False,
         url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Print the job's driver log."""
    with _api(url, token) as client:
        if not follow:
            typer.echo(client.logs(job_id), nl=False)
            return
        for event, data in client.follow_logs(job_id):
            if event == "log":
                typer.echo(data)
            elif event == "end":
                final = json.loads(data)["status"]
                console.print(f"job {job_id}: {final}")
                raise typer.Exit(0 if final == "SUCCEEDED" else 1)
            elif event == "error":
                raise _fail(RuntimeError(json.loads(data)["detail"]))
        raise _fail(RuntimeError("the log stream closed before the job ended; run the command again"))


def cancel(job_id: Annotated[str, typer.Argument(help="Job id.")], url: UrlOpt = DEFAULT_URL,
           token: TokenOpt = None) -> None:
    """Cancel a job (it moves to CANCELLING, then CANCELLED once Ray stopped it)."""
    with _api(url, token) as client:
        _echo_json(client.cancel(job_id))


def metrics(job_id: Annotated[str, typer.Argument(help="Job id.")],
            since_step: Annotated[int | None, typer.Option(help="Only iterations >= this.",
                                                           show_default=False)] = None,
            url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Print the job's metrics records, one JSON object per line."""
    with _api(url, token) as client:
        records = client.metrics(job_id, since_step)["records"]
    for record in records:
        typer.echo(json.dumps(record))


def artifacts(job_id: Annotated[str, typer.Argument(help="Job id.")],
              get: Annotated[str | None, typer.Option("--get", help="Download this artifact.",
                                                      show_default=False)] = None,
              out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to save it (default: its "
                                                                           "name in the current dir).",
                                                       show_default=False)] = None,
              url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """List the job's files, or download one with --get NAME."""
    with _api(url, token) as client:
        if get is not None:
            typer.echo(str(client.download(job_id, get, out or Path(Path(get).name))))
            return
        listing = client.artifacts(job_id)
    table = Table("name", "bytes", "modified")
    for a in listing["data"]:
        table.add_row(a["name"], str(a["size_bytes"]), a["modified_at"][:19])
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the service's commands to the ``solrl`` app."""
    app.add_typer(serve_app, name="serve")
    app.add_typer(admin_app, name="admin")
    for command in (submit, jobs, status, logs, cancel, metrics, artifacts):
        app.command()(command)

"""The ``tungsten`` command. Wiring only: parse options, call into the packages, report."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tungstenkit import __version__
from tungstenkit._errors import TungstenError
from tungstenkit._logging import FORMATS, LEVELS
from tungstenkit._settings import Settings
from tungstenkit._store import ModelSource, ModelStore, hidden_folder_note

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tungstenkit._supervisor import ServeOptions

LOG_LEVEL = click.Choice(list(LEVELS), case_sensitive=False)
LOG_FORMAT = click.Choice(list(FORMATS), case_sensitive=False)


class TungstenGroup(click.Group):
    """Turns the package's own errors into one ``Error: ...`` line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TungstenError as exc:
            raise click.ClickException(str(exc)) from None


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj


def _source(
    ctx: click.Context, model: str | None, module: str | None, class_name: str | None, insecure: bool = False
) -> ModelSource:
    from tungstenkit._push_pull import resolve_served_model

    settings = _settings(ctx)
    return resolve_served_model(
        ModelStore(settings.home), model, module, class_name, settings, insecure=insecure, progress=_echo_err
    )


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def insecure_option(function: Any) -> Any:
    return click.option(
        "--insecure",
        is_flag=True,
        help="Allow plain HTTP to the registry (a registry on this machine may use it anyway).",
    )(function)


def _namespace(ctx: click.Context, namespace: str | None, source: ModelSource) -> str:
    return namespace or _settings(ctx).namespace or source.name


def model_options(function: Any) -> Any:
    """MODEL plus the options that pick the module and class of a model given as a path."""
    function = click.option("-c", "--model-class", "class_name", help="Model class (when the file defines several).")(
        function
    )
    function = click.option("-m", "--model-module", "module", help="Model module for a path MODEL [tungsten_model].")(
        function
    )
    return click.argument("model", required=False)(function)


def serving_options(function: Any) -> Any:
    function = click.option(
        "--log-format", type=LOG_FORMAT, help="Log lines as text or as JSON objects [text; $TUNGSTEN_LOG_FORMAT]."
    )(function)
    function = click.option("--namespace", help="Redis key namespace [the model's name].")(function)
    function = click.option("--log-level", type=LOG_LEVEL, default="info", show_default=True, help="Log level.")(
        function
    )
    return click.option("--batch-size", type=click.IntRange(min=1), help="Max batch size [the model's batch_size].")(
        function
    )


@click.group(cls=TungstenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tungsten")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Build Tungstenkit models and serve them over REST."""
    ctx.obj = Settings.from_env(os.environ)


@cli.command()
@click.argument("directory", default=".", type=click.Path(path_type=Path))
@click.option("-n", "--name", "reference", help="NAME[:TAG] [the folder's name : a short unique id].")
@click.option("-m", "--model-module", "module", default="tungsten_model", show_default=True)
@click.option("-c", "--model-class", "class_name", help="Model class (when the file defines several).")
@click.option(
    "--image/--no-image",
    default=None,
    help="Build the Docker image, failing when no engine is reachable / do not build it [build it when an engine "
    "is reachable].",
)
@click.pass_context
def build(
    ctx: click.Context, directory: Path, reference: str | None, module: str, class_name: str | None, image: bool | None
) -> None:
    """Check the model in DIRECTORY [.] and store a snapshot of its files as NAME:TAG.

    Prints NAME:TAG alone on standard output; progress and Docker's log go to standard error.
    """
    from tungstenkit._build import build_model

    model = build_model(ModelStore(_settings(ctx).home), directory, reference, module, class_name, image, sys.stderr)
    click.echo(model.reference)


@cli.command()
@model_options
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Port to listen on.")
@click.option(
    "--host", default="0.0.0.0", show_default=True, help="Address to listen on."
)  # all interfaces, as the seed serves
@click.option("--workers", type=click.IntRange(min=0), help="Worker processes (0: API only) [1].")
@click.option(
    "--gpus",
    help="GPUs to run workers on: 0,1 or all (each worker sees one: CUDA_VISIBLE_DEVICES) "
    "[all visible GPUs for a model declared with gpu=True, unless --workers is given].",
)
@click.option(
    "--workers-per-gpu",
    type=click.IntRange(min=1),
    help="Workers per GPU [2: one's host work overlaps the other's GPU work; 1 where two copies of "
    "the model do not fit].",
)
@click.option(
    "--api-processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="API processes sharing the port (more HTTP throughput on a host with cores to spare).",
)
@click.option(
    "--redis-url", envvar="TUNGSTEN_REDIS_URL", help="Use this Redis instead of an embedded one [$REDIS_URL]."
)
@insecure_option
@serving_options
@click.pass_context
def serve(
    ctx: click.Context,
    model: str | None,
    module: str | None,
    class_name: str | None,
    port: int,
    host: str,
    workers: int | None,
    gpus: str | None,
    workers_per_gpu: int | None,
    api_processes: int,
    redis_url: str | None,
    insecure: bool,
    batch_size: int | None,
    log_level: str,
    namespace: str | None,
    log_format: str | None,
) -> None:
    """Serve MODEL (NAME:TAG, NAME, REGISTRY/REPO:TAG, a path, or the latest built) over REST."""
    from tungstenkit._supervisor import ServeOptions

    if gpus is not None and workers is not None:
        raise click.UsageError("With --gpus, give --workers-per-gpu rather than --workers")
    options = ServeOptions(
        host=host,
        port=port,
        workers=1 if workers is None else workers,
        api_processes=api_processes,
        batch_size=batch_size,
        log_level=log_level,
    )
    _run_server(
        ctx,
        model,
        module,
        class_name,
        options,
        redis_url,
        namespace,
        log_format,
        gpus=gpus,
        workers_per_gpu=workers_per_gpu,
        workers_given=workers is not None,
        insecure=insecure,
    )


def _run_server(
    ctx: click.Context,
    model: str | None,
    module: str | None,
    class_name: str | None,
    options: ServeOptions,
    redis_url: str | None,
    namespace: str | None,
    log_format: str | None,
    *,
    gpus: str | None = None,
    workers_per_gpu: int | None = None,
    workers_given: bool = True,
    insecure: bool = False,
) -> None:
    """Run ``tungsten serve``'s supervisor with ``options`` until stopped.

    Without ``--workers``, the workers go on the GPUs (``--gpus``, or every visible one
    for a model declared with ``gpu=True``), ``workers_per_gpu`` on each.
    """
    from tungstenkit._gpus import choose_gpus
    from tungstenkit._gpus import workers_per_gpu as default_workers_per_gpu
    from tungstenkit._logging import configure_logging
    from tungstenkit._supervisor import serve as run_serve

    settings = _settings(ctx).replace(redis_url=redis_url, log_format=log_format)
    configure_logging(options.log_level, "serve", settings.log_format)
    source = _source(ctx, model, module, class_name, insecure)
    note = hidden_folder_note(model, source)
    if note:
        logger.warning(note)
    definition = source.load()
    config = definition.config
    if not workers_given:
        chosen = choose_gpus(gpus, config.gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if chosen:
            options.gpus = tuple(g.id for g in chosen)
            options.workers = len(chosen) * (workers_per_gpu or default_workers_per_gpu(chosen, config.gpu_mem_gb))
    options.batch_size = options.batch_size or config.batch_size
    options.namespace = _namespace(ctx, namespace, source)
    run_serve(source, settings, options)


@cli.command()
@model_options
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Port to listen on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 to open the page to other machines).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option(
    "--redis-url", envvar="TUNGSTEN_REDIS_URL", help="Use this Redis instead of an embedded one [$REDIS_URL]."
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Max batch size [the model's batch_size].")
@click.option("--log-level", type=LOG_LEVEL, default="warning", show_default=True, help="Log level.")
@click.option("--namespace", help="Redis key namespace [the model's name].")
@click.pass_context
def demo(
    ctx: click.Context,
    model: str | None,
    module: str | None,
    class_name: str | None,
    port: int,
    host: str,
    workers: int,
    redis_url: str | None,
    batch_size: int | None,
    log_level: str,
    namespace: str | None,
) -> None:
    """Serve MODEL and print the address of its demo page (a form to try it in a browser)."""
    from tungstenkit._supervisor import ServeOptions

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    address = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"

    def announce() -> None:
        click.echo(f"Demo page: {address}  (API docs: {address}docs; Ctrl+C to stop)", err=True)

    options = ServeOptions(
        host=host, port=port, workers=workers, batch_size=batch_size, log_level=log_level, on_ready=announce
    )
    _run_server(ctx, model, module, class_name, options, redis_url, namespace, None)


@cli.command()
@model_options
@click.option("--redis-url", envvar="TUNGSTEN_REDIS_URL", help="The Redis the API queues into [$REDIS_URL].")
@click.option("--ready-fd", type=int, envvar="TUNGSTEN_READY_FD", hidden=True)
@insecure_option
@click.option("--worker-tag", default="", hidden=True)
@serving_options
@click.pass_context
def worker(
    ctx: click.Context,
    model: str | None,
    module: str | None,
    class_name: str | None,
    redis_url: str | None,
    ready_fd: int | None,
    insecure: bool,
    worker_tag: str,
    batch_size: int | None,
    log_level: str,
    namespace: str | None,
    log_format: str | None,
) -> None:
    """Run one worker for MODEL against a shared Redis (add capacity from any machine)."""
    from tungstenkit.worker.worker_process import run_worker

    settings = _settings(ctx).replace(redis_url=redis_url, log_format=log_format)
    if not settings.redis_url:
        raise click.UsageError("--redis-url (or REDIS_URL) is required")
    source = _source(ctx, model, module, class_name, insecure)
    code = run_worker(
        source,
        settings,
        redis_url=settings.redis_url,
        namespace=_namespace(ctx, namespace, source),
        batch_size=batch_size,
        log_level=log_level,
        ready_fd=ready_fd,
        tag=worker_tag,
    )
    sys.exit(code)


@cli.command("_api", hidden=True)
@model_options
@click.option("--host", default="0.0.0.0")
@click.option("--port", type=int, default=3000)
@click.option("--ready-fd", type=int)
@click.option("--reuse-port", is_flag=True)
@click.option("--quiet-start", is_flag=True)
@serving_options
@click.pass_context
def api(
    ctx: click.Context,
    model: str | None,
    module: str | None,
    class_name: str | None,
    host: str,
    port: int,
    ready_fd: int | None,
    reuse_port: bool,
    quiet_start: bool,
    batch_size: int | None,
    log_level: str,
    namespace: str | None,
    log_format: str | None,
) -> None:
    """The API process that `tungsten serve` starts."""
    from tungstenkit.app.api_process import run_api

    settings = _settings(ctx).replace(log_format=log_format)
    if not settings.redis_url:
        raise click.UsageError("TUNGSTEN_REDIS_URL is required")
    source = _source(ctx, model, module, class_name)
    run_api(
        source,
        settings,
        redis_url=settings.redis_url,
        namespace=_namespace(ctx, namespace, source),
        host=host,
        port=port,
        log_level=log_level,
        batch_size=batch_size,
        ready_fd=ready_fd,
        reuse_port=reuse_port,
        quiet_start=quiet_start,
    )


@cli.command("_webhooks", hidden=True)
@click.option("--namespace", required=True)
@click.option("--log-level", type=LOG_LEVEL, default="info")
@click.pass_context
def webhooks(ctx: click.Context, namespace: str, log_level: str) -> None:
    """A webhook worker, as `tungsten serve` starts them."""
    from tungstenkit._webhook_delivery import run_webhook_worker

    settings = _settings(ctx)
    if not settings.redis_url:
        raise click.UsageError("TUNGSTEN_REDIS_URL is required")
    sys.exit(run_webhook_worker(settings, redis_url=settings.redis_url, namespace=namespace, log_level=log_level))


@cli.command()
@click.option(
    "--redis-url",
    envvar="TUNGSTEN_REDIS_URL",
    help="The Redis to read [$REDIS_URL; else the embedded one of a running `tungsten serve`].",
)
@click.option("--namespace", help="The model's namespace [every one found].")
@click.option("-w", "--watch", is_flag=True, help="Refresh until Ctrl+C.")
@click.option(
    "-n",
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option("--count", type=click.IntRange(min=1), help="With --watch, stop after this many refreshes.")
@click.option(
    "--webhook-secret",
    "print_secret",
    is_flag=True,
    help="Print the secret that signs webhooks (to verify them) and exit.",
)
@click.pass_context
def status(
    ctx: click.Context,
    redis_url: str | None,
    namespace: str | None,
    watch: bool,
    interval: float,
    count: int | None,
    print_secret: bool,
) -> None:
    """Workers, queue depth and recent throughput of the models being served."""
    from tungstenkit.cli import status as view

    settings = _settings(ctx).replace(redis_url=redis_url)
    targets = view.find_targets(settings, settings.redis_url, namespace or settings.namespace)
    if print_secret:
        click.echo(view.webhook_secret(settings, targets))
        return
    if not watch:
        click.echo(view.show(targets))
        return
    try:
        view.watch(targets, interval, count, time.sleep)
    except KeyboardInterrupt:
        pass


@cli.group()
def keys() -> None:
    """API keys of a served model (used with TUNGSTEN_API_KEYS=on)."""


def _key_store(ctx: click.Context, redis_url: str | None, namespace: str | None) -> Any:
    from tungstenkit._queue import Keys, KeyStore
    from tungstenkit.cli import status as view

    settings = _settings(ctx).replace(redis_url=redis_url)
    target, found = view.one_namespace(view.find_targets(settings, settings.redis_url, namespace or settings.namespace))
    return KeyStore(target.client, Keys(found))


def key_target_options(function: Any) -> Any:
    function = click.option("--namespace", help="The model's namespace [the one found].")(function)
    return click.option(
        "--redis-url",
        envvar="TUNGSTEN_REDIS_URL",
        help="The Redis the API uses [$REDIS_URL; else the embedded one of a running `tungsten serve`].",
    )(function)


@keys.command("create")
@click.option("--name", required=True, help="What the key is for (shown by `list`).")
@click.option(
    "--scope",
    type=click.Choice(["read", "predict", "admin"]),
    default="predict",
    show_default=True,
    help="read: its owner's predictions; predict: also create and cancel them; admin: every prediction, /metrics.",
)
@click.option("--rps", type=click.FloatRange(min=0), default=0, help="Requests per second it may send (0: no limit).")
@click.option(
    "--max-queued",
    type=click.IntRange(min=0),
    default=0,
    help="Inputs its predictions may have waiting or running (0: no limit).",
)
@click.option(
    "--owner", metavar="KEY_ID", help="Act for the predictions of this key (a successor, or a read-only key)."
)
@key_target_options
@click.pass_context
def keys_create(
    ctx: click.Context,
    name: str,
    scope: str,
    rps: float,
    max_queued: int,
    owner: str | None,
    redis_url: str | None,
    namespace: str | None,
) -> None:
    """Create a key; prints its token, once, alone on standard output."""
    from tungstenkit.cli.keys import created_note

    record, token = _key_store(ctx, redis_url, namespace).create(
        name, scope, owner=owner or "", rps=rps, max_queued=max_queued
    )
    click.echo(token)
    _echo_err(created_note(record))


@keys.command("list")
@key_target_options
@click.pass_context
def keys_list(ctx: click.Context, redis_url: str | None, namespace: str | None) -> None:
    """The keys, with their limits and queued inputs (never their secrets)."""
    from tungstenkit.cli.keys import listing

    click.echo(listing(_key_store(ctx, redis_url, namespace)))


@keys.command("revoke")
@click.argument("key_id")
@key_target_options
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str, redis_url: str | None, namespace: str | None) -> None:
    """Revoke a key: every API process refuses it within a second."""
    revoked = _key_store(ctx, redis_url, namespace).revoke(key_id)
    click.echo(f"Revoked API key {revoked.id} ({revoked.name}) at {revoked.revoked}")


@cli.command("models")
@click.pass_context
def list_models(ctx: click.Context) -> None:
    """List the models in the local store, newest last."""
    models = ModelStore(_settings(ctx).home).list()
    if not models:
        click.echo("No models yet: run `tungsten build` in a model folder.")
        return
    rows = [("NAME", "TAG", "DIGEST", "MODEL CLASS", "BATCH", "CREATED")]
    rows += [
        (
            m.name,
            m.tag,
            _short_digest(m.digest),
            m.metadata["class_name"],
            str(m.metadata["batch_size"]),
            m.metadata["created_at"],
        )
        for m in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _short_digest(digest: str | None) -> str:
    """``sha256:`` and 12 hex digits, as Docker lists image ids ('-' for a model stored without one)."""
    return digest[:19] if digest else "-"


@cli.command()
@click.argument("model")
@click.argument("target")
@insecure_option
@click.option("--image", is_flag=True, help="Push the model's Docker image too, as TARGET's repository, tag TAG-image.")
@click.pass_context
def push(ctx: click.Context, model: str, target: str, insecure: bool, image: bool) -> None:
    """Upload stored MODEL (NAME:TAG) to TARGET (REGISTRY/REPO[:TAG]; TAG defaults to the model's) and print
    TARGET@DIGEST."""
    from tungstenkit import _docker
    from tungstenkit._push_pull import push as push_model

    settings = _settings(ctx)
    store = ModelStore(settings.home)
    if image:
        _docker.check_image_pushable(store.get(model).reference)
    result = push_model(store, model, target, settings, insecure=insecure, progress=_echo_err)
    _echo_err(f"Pushed {model} to {result.reference} ({result.uploaded} blobs sent, {result.present} already there)")
    if image:
        reference = result.reference
        image_reference = f"{reference.registry}/{reference.repository}:{reference.tag}-image"
        _docker.push_image(store.get(model).reference, image_reference)
        _echo_err(f"Pushed the image {image_reference}")
    click.echo(str(result.reference))


@cli.command()
@click.argument("reference")
@insecure_option
@click.pass_context
def pull(ctx: click.Context, reference: str, insecure: bool) -> None:
    """Fetch REFERENCE (REGISTRY/REPO[:TAG|@DIGEST]) into the local store and print its NAME:TAG."""
    from tungstenkit._push_pull import pull as pull_model

    settings = _settings(ctx)
    result = pull_model(ModelStore(settings.home), reference, settings, insecure=insecure, progress=_echo_err)
    model = result.model
    if result.downloaded or result.copied:
        _echo_err(
            f"Pulled {model.reference} ({model.digest}): {result.downloaded} files downloaded, "
            f"{result.copied} copied from the store"
        )
    else:
        _echo_err(f"{model.reference} ({model.digest}) is up to date: nothing transferred")
    click.echo(model.reference)


@cli.command()
@click.argument("source")
@click.argument("target")
@click.pass_context
def tag(ctx: click.Context, source: str, target: str) -> None:
    """Store model SOURCE again as TARGET (NAME[:TAG])."""
    click.echo(ModelStore(_settings(ctx).home).tag(source, target).reference)


@cli.command()
@click.argument("reference")
@click.pass_context
def remove(ctx: click.Context, reference: str) -> None:
    """Remove NAME:TAG from the local store."""
    click.echo(f"Removed {ModelStore(_settings(ctx).home).remove(reference).reference}")


@cli.command()
@model_options
@click.option("-i", "--input", "assignments", multiple=True, metavar="NAME=VALUE", help="An input field (repeatable).")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where output files (and, with --input-file, outputs.jsonl) are written.",
)
@click.option("--url", help="Ask the server at URL (a running `tungsten serve`) instead of running MODEL here.")
@click.option(
    "--input-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --url: a JSONL file, one input object per line; resumable (a second run skips what is done).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="With --input-file: requests in flight at once.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="With --input-file: inputs per request [the model's batch size]."
)
@click.option("--api-key", envvar="TUNGSTEN_API_KEY", help="With --url: the API key to send [$TUNGSTEN_API_KEY].")
@click.pass_context
def predict(
    ctx: click.Context,
    model: str | None,
    module: str | None,
    class_name: str | None,
    assignments: tuple[str, ...],
    output_dir: Path,
    url: str | None,
    input_file: Path | None,
    concurrency: int,
    batch_size: int | None,
    api_key: str | None,
) -> None:
    """Run MODEL once on the given inputs and print its output as JSON.

    With --url, the prediction runs on a running server; local files given for file
    inputs are sent along. With --url and --input-file, every line of the file is sent,
    with a progress bar, and the outputs are written to OUTPUT_DIR/outputs.jsonl.
    """
    from tungstenkit.cli.assignments import parse_assignments

    if url is None:
        if input_file is not None:
            raise click.UsageError("--input-file needs --url: start `tungsten serve` and give its address")
        from tungstenkit.worker.local import predict_once

        definition = _source(ctx, model, module, class_name).load()
        output = predict_once(definition, parse_assignments(assignments), output_dir, _settings(ctx))
        click.echo(json.dumps(output, indent=2))
        return
    if model is not None:
        raise click.UsageError("Give MODEL (run it here) or --url (ask a running server), not both")
    from tungstenkit.cli import remote

    if input_file is None:
        click.echo(json.dumps(remote.predict_one(url, parse_assignments(assignments), output_dir, api_key), indent=2))
        return
    if assignments:
        raise click.UsageError("Give inputs with -i or with --input-file, not both")
    report = remote.predict_file(url, input_file, output_dir, concurrency, batch_size, api_key)
    click.echo(remote.summary(report, output_dir), err=True)
    if report.failed:
        raise click.ClickException(
            f"{report.failed} of {report.total} inputs failed; run the same command again to retry them"
        )


def main() -> None:
    cli(prog_name="tungsten")

"""Entry point: parse the settings once, build the objects, wire them, serve.

    python launch.py                      # the embedded model on http://127.0.0.1:7860
    python launch.py --model vicuna-7b.Q4_K_M.gguf --chat-template vicuna_v1.1
    python launch.py --share --auth alice:secret --admin alice
    python launch.py train --cycle        # subcommands: see commands/ (``launch.py SUBCOMMAND --help``)

The flags are generated from ``settings.Settings``; ``--help`` lists each with its default and its
environment variable.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from commands import COMMANDS, parse, run_command  # noqa: E402
from settings import Settings  # noqa: E402

log = logging.getLogger("launch")


def parse_settings(argv: Sequence[str]) -> Settings:
    """The server's settings: flags over PLAYGROUND_* environment variables over defaults (``--help``
    lists them). A bad value exits with code 2 and a message naming the flag."""
    return parse(Settings, argv)


def serve(settings: Settings) -> int:
    from feedback_store.store import FeedbackStore
    from models.base import ModelLoadError
    from models.loader import load_chat_model
    from models.service import ModelService
    from playground.app import CSS, AppContext, build_app

    t0 = time.perf_counter()
    from playground.access import LoginCheck, share_refusal
    from playground.moderation.rules import ModerationConfigError, RuleModerator

    try:
        auth = settings.safety.auth_pairs() or None
        settings.safety.admin_names()
        if settings.safety.moderation:
            RuleModerator.from_files(settings.moderation_path)  # a bad rules file stops here, not later
    except (ValueError, ModerationConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if why := share_refusal(settings, len(auth or ())):
        print(f"error: {why}", file=sys.stderr)
        return 2
    try:
        inference = settings.inference
        model = load_chat_model(
            settings.model,
            backend=inference.backend,
            chat_template=inference.chat_template,
            n_ctx=inference.n_ctx,
            n_threads=inference.threads_per_instance,
            pool_size=inference.concurrency,
            gpu_layers=inference.gpu_layers,
            cache_dir=settings.hf_cache_dir,
            dtype=inference.dtype,
            quantization=inference.quantization,
            remote_model=inference.remote_model,
            remote_api_key=inference.remote_api_key,
        )
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in getattr(model, "load_warnings", ()):  # e.g. --gpu-layers on a CPU-only llama.cpp build
        print(f"warning: {warning}", file=sys.stderr)
    from models.versions import VersionLoader
    from playground.openai_api import OpenAIAPI
    from playground.safety import Safety

    store = FeedbackStore(settings.db_path)
    base = store.versions.ensure_base(model.model_id, name=f"{model.display_name} (base)")
    service = ModelService.from_registry(
        VersionLoader(model),
        store.versions,
        base_version_id=base.id,
        cache_size=settings.inference.version_cache,
    )
    if service.last_error:
        print(f"warning: {service.last_error}", file=sys.stderr)
    service.start_watching(settings.inference.version_poll_s)
    deployed = service.served
    model = deployed.model
    safety = Safety.from_settings(settings, store, service)  # one set of rate limits for the UI and the API
    scheduler = None
    if settings.server.scheduler:
        from trainers.cycle import CycleConfig
        from trainers.scheduler import TrainingScheduler

        try:
            cycle = CycleConfig.from_settings(settings)
        except ValueError as exc:  # e.g. --train-method naming no policy method
            print(f"error: {exc}", file=sys.stderr)
            service.close()
            return 2
        scheduler = TrainingScheduler(settings.training, cycle, seconds_idle=service.seconds_idle)
        scheduler.start()
    demo = build_app(
        AppContext(settings=settings, store=store, service=service, safety=safety, scheduler=scheduler)
    )
    # The /v1 routes go into Gradio's own FastAPI app, ahead of its routes: one process, --share included.
    app_kwargs = (
        {"routes": OpenAIAPI(settings, store, service, safety=safety).routes()}
        if settings.server.api
        else None
    )
    try:
        demo.launch(
            app_kwargs=app_kwargs,
            server_name=settings.server.host,
            server_port=settings.server.port or None,
            share=settings.server.share,
            auth=LoginCheck(auth) if auth else None,
            inbrowser=settings.server.open_browser,
            prevent_thread_lock=True,
            quiet=True,
            footer_links=["api"],
            css=CSS,  # Gradio 6 takes the page's CSS at launch, not in Blocks()
        )
    except OSError as exc:
        print(
            f"error: cannot listen on {settings.server.host}:{settings.server.port}: {exc}. Try --port 0.",
            file=sys.stderr,
        )
        service.close()
        return 2
    url = demo.local_url
    print(f"Playground ready in {time.perf_counter() - t0:.1f} s at {url}", flush=True)
    print(
        f"Serving {model.display_name} as version {deployed.version_id}; database {settings.db_path}",
        flush=True,
    )
    if settings.server.api:
        print(f"OpenAI-compatible API: {url.rstrip('/')}/v1 (model 'playground')", flush=True)
    print(safety.describe(), flush=True)
    if settings.server.share:
        if demo.share_url:
            print(f"Public link: {demo.share_url}", flush=True)
        else:
            print(
                "Could not create a public share link (is this machine offline?). "
                f"Still serving locally at {url}",
                flush=True,
            )
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        if scheduler is not None:
            scheduler.shutdown()
        demo.close()
        service.close()
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=os.environ.get("PLAYGROUND_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(parse_settings(argv))


if __name__ == "__main__":
    sys.exit(main())

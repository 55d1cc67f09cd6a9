"""Entry point: parse settings once, build the objects, wire them, serve.

    python launch.py                      # the embedded model on http://127.0.0.1:7860
    python launch.py --model vicuna-7b.Q4_K_M.gguf --chat-template vicuna_v1.1
    python launch.py --share --auth alice:secret --admin alice

Every flag also reads an environment variable PLAYGROUND_<NAME> (flags win).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pydantic import ValidationError  # noqa: E402

from playground.settings import Settings  # noqa: E402

log = logging.getLogger("launch")


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launch.py",
        description="Serve the RLHF playground (chat, feedback, training loop) in the browser.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "--model",
        help="GGUF file, Hugging Face directory (GPTQ too) or http(s) URL of an OpenAI-compatible server "
        "(default: the embedded SmolLM2-135M-Instruct Q4_1)",
    )
    p.add_argument("--chat-template", help="auto (the model's own), chatml, vicuna_v1.1, or a .jinja file")
    p.add_argument("--data-dir", help="directory for the database, adapters and logs (default: ./data)")
    p.add_argument("--db", help="SQLite file (default: DATA_DIR/playground.db)")
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--share", action=argparse.BooleanOptionalAction, help="create a public Gradio share link")
    p.add_argument("--auth", action="append", metavar="USER:PASS", help="require a login (repeatable)")
    p.add_argument("--auth-file", help="file with one USER:PASS per line")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads per model instance (default: cores / concurrency, so instances never oversubscribe the CPU)",
    )
    p.add_argument(
        "--concurrency", type=int, help="model instances, i.e. chats generated at once (default 2)"
    )
    p.add_argument("--n-ctx", type=int, help="context window in tokens (default 4096)")
    p.add_argument("--gpu-layers", type=int, help="llama.cpp layers to offload to a GPU (-1 = all)")
    p.add_argument("--system-prompt", help="default system prompt shown in the Chat tab")
    p.add_argument("--presets-dir", help="folder of your preset TOML files (default: DATA_DIR/presets)")
    p.add_argument(
        "--knowledge-dir",
        help="folder of your .md/.txt notes for the ReAct search tool (default: DATA_DIR/knowledge)",
    )
    p.add_argument("--backend", help="auto (default), llamacpp, hf or openai_compat")
    p.add_argument("--dtype", help="hf backend: auto, float32, bfloat16 or float16")
    p.add_argument("--quantization", help="hf backend on a GPU: nf4 (bitsandbytes 4-bit)")
    p.add_argument("--remote-model", help="openai_compat: model name on the remote server")
    p.add_argument("--remote-api-key", help="openai_compat: API key of the remote server")
    p.add_argument(
        "--api", action=argparse.BooleanOptionalAction, help="serve the OpenAI API at /v1 (default on)"
    )
    p.add_argument("--api-key", help="key for the /v1 API; required with --share or --auth")
    p.add_argument("--version-cache", type=int, help="non-deployed versions kept loaded (default 2)")
    p.add_argument(
        "--version-poll-s", type=float, help="seconds between checks for a new deployed version (default 2)"
    )
    # -- safety of a shared playground (playground/safety.py) --
    p.add_argument(
        "--public",
        action=argparse.BooleanOptionalAction,
        help="allow --share without --auth: anyone with the link can chat and give feedback",
    )
    p.add_argument(
        "--admin", action="append", metavar="USER", help="a login allowed admin actions (repeatable)"
    )
    p.add_argument("--admins-file", help="file with one admin login name per line")
    p.add_argument(
        "--rate-limit-chat", metavar="LIMIT", help="chat turns per user, e.g. 20/minute (off = none)"
    )
    p.add_argument("--rate-limit-chat-ip", metavar="LIMIT", help="chat turns per client address (60/minute)")
    p.add_argument("--rate-limit-feedback", metavar="LIMIT", help="feedback events per user (120/minute)")
    p.add_argument(
        "--rate-limit-feedback-ip", metavar="LIMIT", help="feedback events per address (600/minute)"
    )
    p.add_argument(
        "--rate-limit-local",
        action=argparse.BooleanOptionalAction,
        help="apply the limits to this machine's own browser too (always on with --share)",
    )
    p.add_argument(
        "--moderation",
        action=argparse.BooleanOptionalAction,
        help="moderate user input and model output (default on)",
    )
    p.add_argument(
        "--moderation-file", help="your moderation rules, TOML (default: DATA_DIR/moderation.toml)"
    )
    p.add_argument(
        "--moderation-judge",
        action=argparse.BooleanOptionalAction,
        help="also ask the served model whether a text is unsafe (slower; off by default)",
    )
    p.add_argument("--moderation-output", help="withhold (default) or mark a flagged reply")
    p.add_argument(
        "--train-every", type=float, help="minutes between training checks (default 30; 0 = on demand)"
    )
    p.add_argument("--train-cron", help='crontab schedule for training checks, e.g. "0 3 * * *"')
    p.add_argument(
        "--train-min-feedback", type=int, help="new feedback events before a scheduled cycle (default 50)"
    )
    p.add_argument("--train-method", help="auto (default), dpo, kto, sft, rl or best_of_n")
    p.add_argument(
        "--auto-deploy",
        action=argparse.BooleanOptionalAction,
        help="deploy candidates that pass the gate (default on)",
    )
    p.add_argument("--train-threads", type=int, help="CPU threads of the training process (default 1)")
    p.add_argument(
        "--scheduler", action=argparse.BooleanOptionalAction, help="run the training scheduler (default on)"
    )
    p.add_argument(
        "--gate-min-win-rate", type=float, help="gate: reward-model win rate vs deployed (default 0.5)"
    )
    p.add_argument("--gate-kl-budget", type=float, help="gate: maximum KL to the base in nats (default 8)")
    p.add_argument(
        "--gate-max-regressions", type=int, help="gate: regression prompts allowed to fail (default 0)"
    )
    p.add_argument(
        "--gate-eval-prompts", type=int, help="gate: held-out prompts for win rate and KL (default 16)"
    )
    p.add_argument(
        "--train-max-steps", type=int, help="cap optimiser steps per training stage (quick cycles)"
    )
    p.add_argument("--train-nice", type=int, help="priority penalty of the training process (default 10)")
    p.add_argument(
        "--train-hygiene",
        action=argparse.BooleanOptionalAction,
        help="leave flagged text and rate-limited or flagged users out of training (default on)",
    )
    p.add_argument(
        "--open-browser",
        action=argparse.BooleanOptionalAction,
        help="open a browser tab on start (default on)",
    )
    return p


def parse_settings(argv: Sequence[str]) -> Settings:
    """CLI flags over environment variables over defaults. Exits with a readable message on bad input."""
    parser = _serve_parser()
    args = vars(parser.parse_args(list(argv)))
    try:
        return Settings(**args)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(x) for x in e['loc']).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        parser.error(problems)
        raise  # unreachable: parser.error exits


def serve(settings: Settings) -> int:
    from feedback_store.store import FeedbackStore
    from models.base import ModelLoadError
    from models.loader import load_chat_model
    from models.service import ModelService
    from playground.app import AppContext, build_app

    t0 = time.perf_counter()
    from playground.access import LoginCheck, share_refusal
    from playground.moderation.rules import ModerationConfigError, RuleModerator

    try:
        auth = settings.auth_pairs() or None
        settings.admin_names()
        if settings.moderation:
            RuleModerator.from_files(settings.moderation_path)  # a bad rules file stops here, not later
    except (ValueError, ModerationConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if why := share_refusal(settings, len(auth or ())):
        print(f"error: {why}", file=sys.stderr)
        return 2
    try:
        model = load_chat_model(
            settings.model,
            backend=settings.backend,
            chat_template=settings.chat_template,
            n_ctx=settings.n_ctx,
            n_threads=settings.threads_per_instance,
            pool_size=settings.concurrency,
            gpu_layers=settings.gpu_layers,
            cache_dir=settings.hf_cache_dir,
            dtype=settings.dtype,
            quantization=settings.quantization,
            remote_model=settings.remote_model,
            remote_api_key=settings.remote_api_key,
        )
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from models.versions import VersionLoader
    from playground.openai_api import OpenAIAPI
    from playground.safety import Safety

    store = FeedbackStore(settings.db_path)
    base = store.ensure_base_version(model.model_id, name=f"{model.display_name} (base)")
    service = ModelService.from_registry(
        VersionLoader(model), store.versions, base_version_id=base.id, cache_size=settings.version_cache
    )
    if service.last_error:
        print(f"warning: {service.last_error}", file=sys.stderr)
    service.start_watching(settings.version_poll_s)
    deployed = service.served
    model = deployed.model
    safety = Safety.from_settings(settings, store, service)  # one set of rate limits for the UI and the API
    scheduler = None
    if settings.scheduler:
        from trainers.scheduler import SchedulerConfig, TrainingScheduler

        scheduler = TrainingScheduler(
            SchedulerConfig(
                interval_minutes=settings.train_every,
                cron=settings.train_cron,
                min_new_feedback=settings.train_min_feedback,
                threads=settings.train_threads,
                nice=settings.train_nice,
            ),
            settings.cycle_config(),
        )
        scheduler.start()
    demo = build_app(
        AppContext(settings=settings, store=store, service=service, safety=safety, scheduler=scheduler)
    )
    # The /v1 routes go into Gradio's own FastAPI app, ahead of its routes: one process, --share included.
    app_kwargs = (
        {"routes": OpenAIAPI(settings, store, service, safety=safety).routes()} if settings.api else None
    )
    try:
        demo.launch(
            app_kwargs=app_kwargs,
            server_name=settings.host,
            server_port=settings.port or None,
            share=settings.share,
            auth=LoginCheck(auth) if auth else None,
            inbrowser=settings.open_browser,
            prevent_thread_lock=True,
            quiet=True,
            footer_links=["api"],
        )
    except OSError as exc:
        print(
            f"error: cannot listen on {settings.host}:{settings.port}: {exc}. Try --port 0.", file=sys.stderr
        )
        service.close()
        return 2
    url = demo.local_url
    print(f"Playground ready in {time.perf_counter() - t0:.1f} s at {url}", flush=True)
    print(
        f"Serving {model.display_name} as version {deployed.version_id}; database {settings.db_path}",
        flush=True,
    )
    if settings.api:
        print(f"OpenAI-compatible API: {url.rstrip('/')}/v1 (model 'playground')", flush=True)
    print(safety.describe(), flush=True)
    if settings.share:
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


# Subcommands: name -> "module:function"; each function takes the remaining argv and returns an exit
# code. Imported lazily so that `python launch.py` does not pay for the training stack.
SUBCOMMANDS: dict[str, str] = {
    "export": "feedback_store.cli:export_main",
    "import": "feedback_store.cli:import_main",
    "presets": "playground.presets.cli:main",
    "versions": "playground.versions_cli:versions_command",
    "deploy": "playground.versions_cli:deploy_command",
    "rollback": "playground.versions_cli:rollback_command",
    "train": "trainers.cli:main",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=os.environ.get("PLAYGROUND_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        module_name, function_name = SUBCOMMANDS[argv[0]].split(":")
        return getattr(importlib.import_module(module_name), function_name)(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(parse_settings(argv))


if __name__ == "__main__":
    sys.exit(main())

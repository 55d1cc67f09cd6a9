"""The one typed settings object, read from environment variables (PLAYGROUND_*) and CLI flags.

``launch.py`` builds it once and passes it down; no module reads the environment or argv itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = "You are a knowledgeable assistant. Give short, correct answers."


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLAYGROUND_", extra="forbid", validate_default=True)

    model: str | None = Field(
        None,
        description="GGUF file, Hugging Face directory or http(s) URL; default: the embedded SmolLM2-135M",
    )
    chat_template: str = Field(
        "auto", description="auto (the model's own), chatml, vicuna_v1.1, or a .jinja file"
    )
    data_dir: Path = Field(Path("data"), description="where the database, adapters and logs live")
    db: Path | None = Field(None, description="SQLite file; default DATA_DIR/playground.db")
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=0, le=65535)
    share: bool = Field(False, description="create a public Gradio share link")
    auth: list[str] = Field(default_factory=list, repr=False, description="USER:PASS pairs")
    auth_file: Path | None = Field(None, description="file with one USER:PASS per line")
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads per model instance")
    concurrency: int = Field(2, ge=1, le=64, description="model instances = chats generated at once")
    n_ctx: int = Field(4096, ge=256, le=131072, description="context window in tokens")
    gpu_layers: int = Field(0, ge=-1, description="layers offloaded to the GPU (llama.cpp); -1 = all")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    open_browser: bool = Field(True, description="open a browser tab on start")
    presets_dir: Path | None = Field(None, description="your preset TOML files; default DATA_DIR/presets")
    knowledge_dir: Path | None = Field(
        None, description="your .md/.txt notes for the ReAct search tool; default DATA_DIR/knowledge"
    )
    # -- model backends and versions (issue 3) --
    backend: Literal["auto", "llamacpp", "hf", "openai_compat"] = Field(
        "auto",
        description="auto: .gguf -> llamacpp, HF directory -> hf (GPTQ via GPTQModel), URL -> openai_compat",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="hf backend weights dtype"
    )
    quantization: Literal["nf4"] | None = Field(None, description="hf backend: bitsandbytes 4-bit NF4 (GPU)")
    remote_model: str | None = Field(
        None, description="openai_compat: the remote model name (default: first listed)"
    )
    remote_api_key: str | None = Field(
        None, repr=False, description="openai_compat: the remote server's API key"
    )
    api: bool = Field(True, description="serve the OpenAI-compatible API at /v1 beside the UI")
    api_key: str | None = Field(
        None, min_length=8, repr=False, description="key for the /v1 API (required with --share/--auth)"
    )
    version_cache: int = Field(
        2, ge=1, le=16, description="non-deployed versions kept loaded (Compare tab, rollback)"
    )
    version_poll_s: float = Field(
        2.0, ge=0, le=3600, description="seconds between checks of the deployed version; 0 = off"
    )
    # -- the training loop (issue 7) --
    train_every: float = Field(
        30.0, ge=0, description="minutes between checks for new feedback to train on; 0 = only on demand"
    )
    train_cron: str | None = Field(
        None, description="crontab schedule for training checks (instead of train_every)"
    )
    train_min_feedback: int = Field(
        50, ge=0, description="new feedback events needed before a scheduled cycle"
    )
    train_method: Literal["auto", "dpo", "kto", "sft", "rl", "best_of_n"] = Field(
        "auto",
        description="policy update: auto = DPO, KTO when thumbs dominate, SFT with only demonstrations",
    )
    auto_deploy: bool = Field(
        True, description="deploy a candidate that passes the gate without a human click"
    )
    train_threads: int = Field(1, ge=1, le=256, description="CPU threads of the training process")
    train_nice: int = Field(
        10, ge=0, le=19, description="scheduling priority penalty of the training process"
    )
    train_hygiene: bool = Field(
        True,
        description="leave flagged text and rate-limited, repeatedly flagged or excluded users out of training",
    )
    scheduler: bool = Field(True, description="run the training scheduler in this server")
    gate_min_win_rate: float = Field(0.5, ge=0, le=1, description="gate: reward-model win rate vs deployed")
    gate_kl_budget: float = Field(8.0, ge=0, description="gate: maximum KL to the base (nats per reply)")
    gate_max_regressions: int = Field(0, ge=0, description="gate: regression prompts allowed to fail")
    gate_eval_prompts: int = Field(16, ge=1, le=256, description="gate: held-out prompts for win rate and KL")
    train_max_steps: int | None = Field(
        None, ge=1, description="cap optimiser steps per training stage (quick cycles); default: full epochs"
    )

    # -- safety of a shared playground (issue 9; playground/safety.py) --
    public: bool = Field(False, description="allow --share without --auth (anyone with the link can use it)")
    admin: list[str] = Field(default_factory=list, description="login names allowed admin actions")
    admins_file: Path | None = Field(None, description="file with one admin login name per line")
    rate_limit_chat: str = Field("20/minute", description="chat turns per user ('off' = none)")
    rate_limit_chat_ip: str = Field("60/minute", description="chat turns per client address")
    rate_limit_feedback: str = Field("120/minute", description="feedback events per user")
    rate_limit_feedback_ip: str = Field("600/minute", description="feedback events per client address")
    rate_limit_local: bool = Field(
        False, description="limit 127.0.0.1 too when not sharing (the operator's own browser)"
    )
    moderation: bool = Field(True, description="moderate user input and model output")
    moderation_file: Path | None = Field(
        None,
        description="your moderation rules (TOML), merged into the built-in ones; default DATA_DIR/moderation.toml",
    )
    moderation_judge: bool = Field(False, description="also ask the served model whether a text is unsafe")
    moderation_output: Literal["withhold", "mark"] = Field(
        "withhold", description="a flagged reply is withheld (stored, not shown) or shown marked"
    )

    @field_validator("rate_limit_chat", "rate_limit_chat_ip", "rate_limit_feedback", "rate_limit_feedback_ip")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from playground.ratelimit import parse_limit

        parse_limit(value)
        return value

    @field_validator("auth")
    @classmethod
    def _check_auth(cls, pairs: list[str]) -> list[str]:
        for pair in pairs:
            user, sep, password = pair.partition(":")
            if not sep or not user or not password:
                raise ValueError("each --auth value must be USER:PASS with both parts non-empty")
        return pairs

    @property
    def threads_per_instance(self) -> int:
        """Default: share the cores among the instances so they never oversubscribe the CPU."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.concurrency)

    @property
    def hf_cache_dir(self) -> Path:
        """Where GGUF files dequantized for transformers are kept (made once, reloaded in ~0.2 s)."""
        return self.data_dir / "hf-base"

    def cycle_config(self, excluded_users: frozenset[str] = frozenset()):
        """The training cycle's settings, derived from these (one place, shared by server and CLI)."""
        from trainers.cycle import CycleConfig
        from trainers.gate import GateConfig

        steps = {"max_steps": self.train_max_steps} if self.train_max_steps else {}
        return CycleConfig(
            db_path=self.db_path,
            data_dir=self.data_dir,
            model=self.model,
            method=self.train_method,
            auto_deploy=self.auto_deploy,
            threads=self.train_threads,
            chat_template=self.chat_template,
            excluded_users=excluded_users,
            hygiene=self.train_hygiene,
            reward_overrides=steps,
            policy_overrides=steps,
            gate=GateConfig(
                min_win_rate=self.gate_min_win_rate,
                kl_budget=self.gate_kl_budget,
                max_regressions=self.gate_max_regressions,
                eval_prompts=self.gate_eval_prompts,
                system_prompt=self.system_prompt or None,
            ),
        )

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.data_dir / "playground.db"

    @property
    def presets_path(self) -> Path:
        return self.presets_dir if self.presets_dir is not None else self.data_dir / "presets"

    @property
    def knowledge_path(self) -> Path:
        return self.knowledge_dir if self.knowledge_dir is not None else self.data_dir / "knowledge"

    @property
    def knowledge_db_path(self) -> Path:
        return self.data_dir / "knowledge.db"

    @property
    def moderation_path(self) -> Path | None:
        """The operator's moderation rules: --moderation-file, else DATA_DIR/moderation.toml if present."""
        if self.moderation_file is not None:
            return self.moderation_file
        default = self.data_dir / "moderation.toml"
        return default if default.exists() else None

    def admin_names(self) -> set[str]:
        """--admin names and the --admins-file names (one per line, # comments)."""
        names = {a.strip() for a in self.admin if a.strip()}
        if self.admins_file is not None:
            try:
                text = self.admins_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read admins file {self.admins_file}: {exc}") from exc
            names |= {
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")
            }
        return names

    def auth_pairs(self) -> list[tuple[str, str]]:
        """All (user, password) pairs from --auth and --auth-file. Passwords are never logged."""
        lines = list(self.auth)
        if self.auth_file is not None:
            try:
                text = self.auth_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read auth file {self.auth_file}: {exc}") from exc
            for number, raw in enumerate(text.splitlines(), 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                user, sep, password = line.partition(":")
                if not sep or not user or not password:
                    raise ValueError(f"{self.auth_file}:{number}: expected USER:PASS")
                lines.append(line)
        return [tuple(p.split(":", 1)) for p in lines]  # type: ignore[misc]

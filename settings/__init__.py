"""The one typed settings object of the playground, in sections, and the command line generated from it.

Every field is written once: its type, default and description here make the flag, its help text and
its environment variable. ``launch.py`` (and each subcommand) builds one object with
``pydantic_settings.CliApp`` and passes it, or one of its sections, down; no other module reads argv
or the environment for settings.

Where a value comes from, strongest first: the command line, environment variables, defaults.

- Common to every command (``CommonSettings``): ``--model``, ``--data-dir``, ``--db``.
- Sections (``Settings``): ``server``, ``inference`` (how the model is served), ``safety``,
  ``training``, ``gate``, ``canary``. Each field has a dotted flag (``--server.port``) and the short flag users
  know (``--port``, ``--train-every``, ``--gate-min-win-rate``): the section's ``flag_prefix`` plus the
  field name, unless the field names its own ``flag``.
- Environment variables: ``PLAYGROUND_<FIELD>`` for the common fields, ``PLAYGROUND_<SECTION>_<FIELD>``
  for the sections (``PLAYGROUND_SERVER_PORT=9000``, ``PLAYGROUND_TRAINING_EVERY=0``).

``models/`` and ``feedback_store/`` do not import this module: they take plain arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = "You are a knowledgeable assistant. Give short, correct answers."
ENV_PREFIX = "PLAYGROUND_"
TRAIN_METHODS = ("auto", "dpo", "kto", "orpo", "simpo", "sft", "rl", "best_of_n")
"""Choices of ``--train-method``; a test checks that it names every policy method of ``trainers.registry``."""
DPO_LOSSES = ("sigmoid", "ipo", "hinge", "robust")


PTX_COEF = 0.3
"""The replay term's default weight: a starting point, not yet measured against others (docs/training.md)."""
LORA_LAYERS = 0.3
"""The default share of upper layers with LoRA: a starting point, not yet measured against all layers."""


RATE_LIMIT_OFF = {"", "0", "off", "none", "unlimited"}


def parse_rate_limit(text: str | None):
    """ "20/minute" -> a ``limits`` item; "off" -> None. ValueError with the expected form otherwise."""
    from limits import parse

    if text is None or text.strip().lower() in RATE_LIMIT_OFF:
        return None
    try:
        return parse(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not a rate limit: write e.g. '20/minute', '100 per hour', or 'off'"
        ) from exc


class Section(BaseModel):
    """A group of settings; ``flag_prefix`` + the field name is its short flag (``--train-every``)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
    flag_prefix: ClassVar[str] = ""


class ServerSettings(Section):
    """The web server and the browser UI."""

    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 for the LAN)")
    port: int = Field(7860, ge=0, le=65535, description="port (0 picks a free one)")
    share: bool = Field(False, description="create a public Gradio share link (needs --auth or --public)")
    open_browser: bool = Field(True, description="open a browser tab on start")
    api: bool = Field(True, description="serve the OpenAI-compatible API at /v1 beside the UI")
    scheduler: bool = Field(True, description="run the training scheduler in this server")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="the default system prompt in the Chat tab")
    presets_dir: Path | None = Field(None, description="your preset TOML files; unset: DATA_DIR/presets")
    knowledge_dir: Path | None = Field(
        None, description="your .md/.txt notes for the ReAct search tool; unset: DATA_DIR/knowledge"
    )


class InferenceSettings(Section):
    """How the model is loaded and served."""

    backend: Literal["auto", "llamacpp", "hf", "openai_compat"] = Field(
        "auto",
        description="auto: .gguf -> llamacpp, HF directory -> hf (GPTQ via GPTQModel), URL -> openai_compat",
    )
    chat_template: str = Field(
        "auto", description="auto (the model's own), chatml, vicuna_v1.1, or a .jinja file"
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads per model instance; unset: cores / concurrency"
    )
    concurrency: int = Field(2, ge=1, le=64, description="model instances = replies generated at once")
    n_ctx: int = Field(4096, ge=256, le=131072, description="context window in tokens")
    gpu_layers: int = Field(0, ge=-1, description="llama.cpp layers offloaded to a GPU (-1 = all)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="hf backend: weights dtype"
    )
    quantization: Literal["nf4"] | None = Field(None, description="hf backend: bitsandbytes 4-bit NF4 (GPU)")
    remote_model: str | None = Field(
        None, description="openai_compat: the remote model name; unset: the first listed"
    )
    remote_api_key: str | None = Field(
        None, repr=False, description="openai_compat: the remote server's API key"
    )
    version_cache: int = Field(
        2, ge=1, le=16, description="non-deployed versions kept loaded (Compare tab, instant rollback)"
    )
    version_poll_s: float = Field(
        2.0, ge=0, le=3600, description="seconds between checks for a new deployed version (0 = never)"
    )

    @property
    def threads_per_instance(self) -> int:
        """Default: share the cores among the instances so that they never oversubscribe the CPU."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.concurrency)


class SafetySettings(Section):
    """Logins, admins, rate limits and the content filter of a shared playground."""

    auth: list[str] = Field(
        default_factory=list, repr=False, description="require a login USER:PASS (repeatable)"
    )
    auth_file: Path | None = Field(None, description="file with one USER:PASS per line")
    public: bool = Field(False, description="allow --share without --auth (anyone with the link can use it)")
    admin: list[str] = Field(default_factory=list, description="a login allowed admin actions (repeatable)")
    admins_file: Path | None = Field(None, description="file with one admin login name per line")
    api_key: str | None = Field(
        None, min_length=8, repr=False, description="key for the /v1 API (required with --share or --auth)"
    )
    rate_limit_chat: str = Field("20/minute", description="chat turns per user ('off' = none)")
    rate_limit_chat_ip: str = Field("60/minute", description="chat turns per client address")
    rate_limit_feedback: str = Field("120/minute", description="feedback events per user")
    rate_limit_feedback_ip: str = Field("600/minute", description="feedback events per client address")
    rate_limit_local: bool = Field(
        False, description="limit this machine's own browser too (always on with --share)"
    )
    moderation: bool = Field(True, description="the content filter on user input and model output")
    moderation_file: Path | None = Field(
        None,
        description="your moderation rules (TOML), merged into the built-in ones; unset: DATA_DIR/moderation.toml",
    )
    moderation_judge: bool = Field(
        False, description="also ask the served model whether a text is unsafe (slow)"
    )
    moderation_output: Literal["withhold", "mark"] = Field(
        "withhold", description="a flagged reply is withheld (stored, not shown) or shown marked"
    )

    @field_validator("rate_limit_chat", "rate_limit_chat_ip", "rate_limit_feedback", "rate_limit_feedback_ip")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @field_validator("auth")
    @classmethod
    def _check_auth(cls, pairs: list[str]) -> list[str]:
        for pair in pairs:
            user, sep, password = pair.partition(":")
            if not sep or not user or not password:
                raise ValueError("each --auth value must be USER:PASS with both parts non-empty")
        return pairs

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


class TrainingSettings(Section):
    """The training scheduler and the training process."""

    flag_prefix: ClassVar[str] = "train-"

    every: float = Field(
        30.0, ge=0, description="minutes between checks for new feedback to train on (0 = only on demand)"
    )
    cron: str | None = Field(None, description='crontab schedule for the checks instead, e.g. "0 3 * * *"')
    min_feedback: int = Field(50, ge=0, description="new feedback events needed before a scheduled cycle")
    method: Literal[TRAIN_METHODS] = Field(  # type: ignore[valid-type]
        "auto",
        description="policy update: auto = DPO, KTO when thumbs dominate, SFT with only demonstrations; "
        "orpo and simpo are reference-free",
    )
    dpo_loss: Literal[DPO_LOSSES] = Field(  # type: ignore[valid-type]
        "sigmoid",
        description="DPO's loss: sigmoid (DPO), ipo, hinge (SLiC), robust (votes flipped with probability "
        "--label-smoothing)",
        json_schema_extra={"flag": "dpo-loss"},
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="DPO: the probability that a vote is flipped (robust DPO; conservative DPO with sigmoid)",
        json_schema_extra={"flag": "label-smoothing"},
    )
    auto_deploy: bool = Field(
        True,
        description="deploy a candidate that passes the gate without a human click",
        json_schema_extra={"flag": "auto-deploy"},
    )
    threads: int = Field(1, ge=1, le=256, description="CPU threads of the training process")
    nice: int = Field(10, ge=0, le=19, description="scheduling priority penalty of the training process")
    hygiene: bool = Field(
        True, description="leave flagged text and rate-limited, flagged or excluded users out of training"
    )
    max_steps: int | None = Field(
        None, ge=1, description="cap optimiser steps per training stage (quick cycles); unset: full epochs"
    )
    idle_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="CPU threads of the training process while nobody chats (the server tells it); "
        "unset: all cores. While chat runs it uses --train-threads",
    )
    idle_after: float = Field(
        30.0, ge=0, description="seconds without a chat reply before the server counts as idle"
    )
    ptx_coef: float = Field(
        PTX_COEF,
        ge=0,
        description="replay term against the alignment tax: each policy method's loss plus this times the "
        "NLL of replayed answers (0 = off)",
        json_schema_extra={"flag": "ptx-coef"},
    )
    replay: Literal["answers", "text"] = Field(
        "answers",
        description="what the replay term replays: answers = the deployed version's own greedy answers to "
        "the shipped general prompts, plus the users' better answers; text = shipped plain prose",
    )
    lora_layers: float = Field(
        LORA_LAYERS,
        gt=0,
        le=1,
        description="share of the transformer layers, counted from the top, that get LoRA (1 = all)",
    )
    bf16: Literal["auto", "on", "off"] = Field(
        "auto",
        description="bf16 autocast: auto = on a GPU with bf16 or a CPU with AMX, fp32 otherwise",
    )
    reward_warm_start: bool = Field(
        True, description="continue the previous cycle's reward model instead of a fresh score head"
    )
    ai_pairs: int = Field(
        0,
        ge=0,
        le=1024,
        description="RLAIF: pairs per cycle the reward model labels, two replies of the deployed version to "
        "users' questions that got no feedback; 0: off",
    )
    ai_weight: float = Field(
        0.5,
        gt=0,
        le=1,
        description="what one AI-labelled pair weighs against a user's vote in the policy update",
    )
    ai_judge: str | None = Field(
        None,
        description="RLAIF: URL of an OpenAI-compatible server whose model labels the pairs under the "
        "constitution, both orders, kept when they agree; unset: the reward model labels them",
    )
    ai_judge_model: str | None = Field(None, description="the judge's model name; unset: the first listed")
    ai_judge_api_key: str | None = Field(None, repr=False, description="the judge server's API key")
    ai_constitution: Path | None = Field(
        None, description="a text file of principles the judge applies; unset: the shipped constitution"
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        description="delete conversations (and the feedback on them, out of training) whose last message "
        "is older than this many days; the scheduler applies it daily; unset: keep everything",
        json_schema_extra={"flag": "retention-days"},
    )


class GateSettings(Section):
    """The evaluation gate's rule (``trainers.gate`` explains it): deploy when the candidate beats the
    deployed version on the primary measure with confidence and no guard is worse beyond its margin,
    reject when it is worse with confidence, otherwise undecided."""

    flag_prefix: ClassVar[str] = "gate-"

    min_win_rate: float = Field(
        0.5,
        ge=0,
        le=1,
        description="primary measure: the reward model's win rate of the candidate's replies against the "
        "deployed version's; deploy needs its interval above this, below it rejects",
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="confidence of every interval (paired bootstrap over prompts)"
    )
    min_prompts: int = Field(
        12, ge=1, description="fewest held-out prompts the win rate rests on; fewer: undecided"
    )
    samples_per_prompt: int = Field(
        2, ge=1, le=16, description="replies per version and held-out prompt for the win rate"
    )
    preference_margin: float = Field(
        0.15,
        ge=0,
        le=1,
        description="guard: held-out user pairs the candidate orders better than the deployed version may "
        "fall this far below half",
    )
    fact_margin: float = Field(
        0.1,
        ge=0,
        le=1,
        description="guard: share of regression facts the candidate may lose against the base",
    )
    refusal_margin: float = Field(
        0.1,
        ge=0,
        le=1,
        description="guard: share of harmful requests the base refuses that the candidate may stop refusing",
    )
    kl_budget: float = Field(8.0, ge=0, description="guard: maximum KL to the base, nats per reply")
    max_regressions: int | None = Field(
        None,
        ge=0,
        description="allowance: this many lost regression prompts (facts, refusals) pass whatever the "
        "interval says; unset: only the interval decides",
    )
    eval_prompts: int = Field(32, ge=1, le=256, description="held-out prompts for the win rate")
    kl_prompts: int = Field(16, ge=1, le=256, description="held-out prompts for the KL estimate")
    max_heldout_pairs: int = Field(
        64, ge=1, description="preference guard on at most this many held-out pairs, spread over all"
    )
    max_new_tokens: int = Field(48, ge=1, le=2048, description="reply length when the gate samples")
    regression_tokens: int = Field(
        32, ge=1, le=2048, description="greedy answer length for the regression facts and refusals"
    )
    facts: int | None = Field(None, ge=0, description="regression facts to check; unset: all")
    refusals: int | None = Field(
        None, ge=0, description="harmful requests that must stay refused; unset: all"
    )


class CanarySettings(Section):
    """Canary battles (``feedback_store.canary`` explains the rule): a candidate the offline gate did not
    reject is put before the users in a share of the Compare tab's anonymous battles against the
    deployed version, and their votes decide, with an anytime-valid interval at the gate's confidence."""

    flag_prefix: ClassVar[str] = "canary-"

    share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the Compare tab's anonymous battles that pit a live candidate against the "
        "deployed version (e.g. 0.3); 0: off, the offline gate decides alone",
    )
    votes: int = Field(
        200,
        ge=1,
        description="vote budget: after this many decisive votes the offline gate's decision stands",
    )
    hours: float = Field(
        24.0, gt=0, description="time budget: after this many hours the offline gate's decision stands"
    )
    per_user: int = Field(20, ge=1, description="votes of one user that count (their first)")
    undecided: bool = Field(
        True,
        description="also put candidates the offline gate left undecided on canary (the votes are the "
        "evidence it lacked; when the budget runs out they stay undecided)",
    )


SECTIONS: dict[str, type[Section]] = {
    "server": ServerSettings,
    "inference": InferenceSettings,
    "safety": SafetySettings,
    "training": TrainingSettings,
    "gate": GateSettings,
    "canary": CanarySettings,
}


def short_flags() -> dict[str, str]:
    """``section.field-name`` -> the short flag, for pydantic-settings' ``cli_shortcuts``."""
    flags: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for name, info in cls.model_fields.items():
            kebab = name.replace("_", "-")
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            flags[f"{section}.{kebab}"] = str(extra.get("flag") or cls.flag_prefix + kebab)
    if len(set(flags.values())) != len(flags):
        raise RuntimeError("two settings share a short flag")  # a programming error, caught by the tests
    return flags


CLI_CONFIG: SettingsConfigDict = {
    "env_prefix": ENV_PREFIX,
    "env_nested_delimiter": "_",
    "env_nested_max_split": 1,
    "extra": "forbid",
    "validate_default": True,
    "cli_kebab_case": True,
    "cli_implicit_flags": True,
    "cli_avoid_json": True,
    "cli_hide_none_type": True,
    "cli_exit_on_error": True,
    "cli_prog_name": "launch.py",
    "cli_shortcuts": short_flags(),
}


class CommonSettings(BaseSettings):
    """What every command shares: the model, the data directory and the database."""

    model_config = CLI_CONFIG

    model: str | None = Field(
        None,
        description="GGUF file, Hugging Face directory (GPTQ too) or http(s) URL of an OpenAI-compatible "
        "server (unset: the embedded SmolLM2-135M-Instruct Q4_1)",
    )
    data_dir: Path = Field(Path("data"), description="where the database, adapters and logs live")
    db: Path | None = Field(None, description="the SQLite file; unset: DATA_DIR/playground.db")

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.data_dir / "playground.db"

    @property
    def hf_cache_dir(self) -> Path:
        """Where GGUF files dequantized for transformers are kept (made once, reloaded in about 0.2 s)."""
        return self.data_dir / "hf-base"


class Settings(CommonSettings):
    """Serve the RLHF playground (chat, feedback, training loop) in the browser.

    Subcommands: train, export, import, versions, deploy, rollback, presets, quantize
    (``launch.py train --help``).
    """

    server: ServerSettings = Field(default_factory=ServerSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    canary: CanarySettings = Field(default_factory=CanarySettings)

    @model_validator(mode="before")
    @classmethod
    def _short_names(cls, data: Any) -> Any:
        """Python callers may pass a section's field by its short flag's name, as on the command line:
        ``Settings(port=0, train_every=0, gate_min_win_rate=0.6)``. They win over the nested form."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for dotted, flag in short_flags().items():
            name = flag.replace("-", "_")
            if name in data and name not in cls.model_fields:
                section, field = dotted.split(".")
                value = data.pop(name)
                nested = data.get(section)
                nested = dict(nested) if isinstance(nested, dict) else ({} if nested is None else nested)
                if isinstance(nested, dict):
                    nested[field.replace("-", "_")] = value
                else:  # a section object: copy it with the field replaced
                    nested = nested.model_copy(update={field.replace("-", "_"): value})
                data[section] = nested
        return data

    @property
    def presets_path(self) -> Path:
        return self.server.presets_dir or self.data_dir / "presets"

    @property
    def knowledge_path(self) -> Path:
        return self.server.knowledge_dir or self.data_dir / "knowledge"

    @property
    def knowledge_db_path(self) -> Path:
        return self.data_dir / "knowledge.db"

    @property
    def moderation_path(self) -> Path | None:
        """The operator's moderation rules: --moderation-file, else DATA_DIR/moderation.toml if present."""
        if self.safety.moderation_file is not None:
            return self.safety.moderation_file
        default = self.data_dir / "moderation.toml"
        return default if default.exists() else None

    @property
    def moderation_target(self) -> Path:
        """Where accepted rules changes are written: --moderation-file, else DATA_DIR/moderation.toml
        (created by the first accepted change)."""
        return self.safety.moderation_file or self.data_dir / "moderation.toml"


def flag_for(loc: tuple[Any, ...]) -> str:
    """The flag a user typed for a validation error's location: ``("server", "port")`` -> ``--port``."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    dotted = ".".join(p.replace("_", "-") for p in parts)
    return "--" + short_flags().get(dotted, dotted)

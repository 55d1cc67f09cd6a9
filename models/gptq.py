"""GPTQ 4-bit checkpoints made with GPTQModel, on the CPU or a GPU.

- :func:`quantize`: a Hugging Face checkpoint -> a GPTQ checkpoint, calibrated on texts that ship with the
  product (``models/calibration/gptq.jsonl``: prose and chat turns, no downloads), with the model's chat
  template carried into it (a Vicuna model without one gets vicuna_v1.1) and a progress callback.
- :func:`ensure_gptq_base`: the same, made once and cached (the embedded GGUF is dequantized first with
  ``ensure_hf_base``), as ``ensure_hf_base`` caches the dequantized copy.
- :func:`check_group_size`: GPTQModel's CPU int4 kernel needs every quantized layer's input width to be a
  multiple of the group size; a wrong size fails only at inference, so it is checked before quantizing
  and before serving.
- :func:`prepare_for_training`: keeps GPTQModel's CPU layers on their differentiable path.

Serving and training load a GPTQ checkpoint through transformers (``models/hf_base.py``, the trainers),
whose GPTQ integration (optimum) builds GPTQModel's kernels: the ATen int4 kernel on a CPU, Marlin or
Triton kernels on a GPU. Nothing here imports torch or gptqmodel until it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from models.base import ModelLoadError
from models.hf_base import weights_key

log = logging.getLogger(__name__)

BITS = (4,)
"""Bit widths offered: the CPU kernel (ATen int4) serves 4-bit only."""
GROUP_SIZES = (16, 32, 64, 128)
"""Group sizes GPTQModel's CPU kernel supports (a GPU kernel supports these too)."""
DEFAULT_GROUP_SIZE = 64
CALIBRATION_FILE = Path(__file__).with_name("calibration") / "gptq.jsonl"
GPTQ_VERSION = "7.6.0"
INSTALL_HINT = (
    "GPTQ needs GPTQModel: run `scripts/setup.sh --gptq` (it installs the `gptq` extra, then "
    f"`pip install --no-deps gptqmodel=={GPTQ_VERSION}`)"
)
SOURCE_FILE = "gptq_source.json"
"""Written last into a checkpoint this module made: what it was made from, and how."""

Progress = Callable[[float, str], None]
"""(fraction done 0..1, what is happening)"""


class QuantizationError(ValueError):
    """A checkpoint that cannot be quantized as asked; the message says what to pass instead."""


def prepare_environment() -> None:
    """Set GPTQModel's environment before it is imported (it reads it at import time).

    GPTQModel sizes its CPU thread pools from GPTQMODEL_CPU_WORKERS, by default half the cores; on a
    2-core machine that is 1, and quantizing then fails with "Virtual pool 'model_loader:cpu' requests 2
    workers but parent 'cpu' only has 1". Two is the least it works with.
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, ((os.cpu_count() or 1) + 1) // 2)))


def missing_packages() -> list[str]:
    """The packages GPTQ needs that are not installed (transformers' GPTQ integration needs optimum)."""
    import importlib.util

    return [m for m in ("gptqmodel", "optimum") if importlib.util.find_spec(m) is None]


def require_gptqmodel() -> None:
    missing = missing_packages()
    if missing:
        raise ModelLoadError(f"{INSTALL_HINT} ({', '.join(missing)} not installed).")
    prepare_environment()


# -- checks ------------------------------------------------------------------------------------------
def quantized_input_widths(config: dict[str, Any]) -> dict[str, int]:
    """Input widths of the linear layers GPTQ quantizes in a llama-style block, from config.json."""
    hidden = int(config["hidden_size"])
    heads = int(config.get("num_attention_heads") or 1)
    head_dim = int(config.get("head_dim") or hidden // heads)
    widths = {"hidden size": hidden, "attention output width": heads * head_dim}
    if config.get("intermediate_size"):
        widths["intermediate (MLP) size"] = int(config["intermediate_size"])
    return widths


def check_group_size(config: dict[str, Any], group_size: int, *, model_name: str = "this model") -> None:
    """Raise QuantizationError, naming a group size that works, unless ``group_size`` fits the model."""
    if group_size not in GROUP_SIZES:
        raise QuantizationError(
            f"group size {group_size} is not supported: choose one of {', '.join(map(str, GROUP_SIZES))}"
        )
    try:
        widths = quantized_input_widths(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise QuantizationError(f"{model_name}'s config.json has no usable hidden_size: {exc}") from exc
    bad = {name: w for name, w in widths.items() if w % group_size}
    if not bad:
        return
    fits = sorted((g for g in GROUP_SIZES if all(w % g == 0 for w in widths.values())), reverse=True)
    name, width = next(iter(bad.items()))
    if fits:
        hint = f"pass --group-size {fits[0]}" + (f" (or {', '.join(map(str, fits[1:]))})" if fits[1:] else "")
    else:
        hint = f"no supported group size ({', '.join(map(str, GROUP_SIZES))}) divides them all"
    raise QuantizationError(
        f"group size {group_size} does not divide the {name} {width} of {model_name}: GPTQModel's CPU "
        f"kernel needs every quantized layer's input width to be a multiple of the group size; {hint}."
    )


def read_config(hf_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(hf_dir) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise QuantizationError(f"{hf_dir} is not a Hugging Face checkpoint (config.json: {exc})") from exc


# -- calibration --------------------------------------------------------------------------------------
def calibration_items(n: int | None = None) -> list[dict[str, Any]]:
    """The shipped calibration items (``{"text": ...}`` or ``{"messages": [...]}``), the first ``n``."""
    items = [json.loads(line) for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line]
    if n is not None:
        if n > len(items):
            raise QuantizationError(
                f"{len(items)} calibration texts ship with the playground; ask for at most that"
            )
        items = items[:n]
    return items


def calibration_texts(template, n: int | None = None) -> list[str]:
    """The calibration items as text, chat turns rendered with the model's template (how it will be
    prompted when served), so the quantization is tuned to the prompts it will see."""
    texts = []
    for item in calibration_items(n):
        if "messages" in item:
            texts.append(template.render(item["messages"], add_generation_prompt=False))
        else:
            texts.append(item["text"])
    return texts


def resolve_chat_template(hf_dir: Path, choice: str = "auto"):
    """The template to calibrate with and to carry into the checkpoint (raises QuantizationError)."""
    from transformers import AutoTokenizer

    from models.templates import TemplateError, resolve_template

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    try:
        template = resolve_template(
            choice,
            embedded_source=getattr(tokenizer, "chat_template", None),
            model_name=Path(hf_dir).name,
            bos_token=tokenizer.bos_token or "",
            eos_token=tokenizer.eos_token or "",
        )
    except TemplateError as exc:
        raise QuantizationError(str(exc)) from exc
    return template


def standalone_template(template) -> str:
    """The Jinja source with the template's own variables inlined (vicuna_v1.1's default system prompt),
    so that transformers and our renderer both render it without knowing the built-in templates."""
    preamble = "".join(
        "{%- set " + name + " = " + json.dumps(value) + " -%}" for name, value in template.variables.items()
    )
    return preamble + template.source


# -- quantizing ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _output_to(log_path: Path | None) -> Iterator[None]:
    """Send everything written to file descriptors 1 and 2 (GPTQModel's banner, tables and progress
    redraws: hundreds of kilobytes) to ``log_path``. The caller's own progress bar keeps a duplicate of
    the terminal's descriptor from before, so it still shows."""
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _keep_layer_logs_beside(log_path: Path) -> None:
    """GPTQModel 7.6 writes a per-layer log into ``./logs`` of whatever directory the user is in (a
    module-level relative path, no option): point it at the folder of our own log instead, so that
    quantizing leaves nothing in the working directory. Left alone if a later version moves it."""
    from gptqmodel.looper import loop_processor

    if isinstance(getattr(loop_processor, "_PROJECT_LOG_DIR", None), Path):
        loop_processor._PROJECT_LOG_DIR = log_path.parent / "gptq-logs"


def _decoder_layers(model) -> Sequence:
    """The model's list of decoder blocks (GPTQ quantizes them one after the other)."""
    import torch

    n = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and (n is None or len(module) == n):
            return module
    return ()


def quantize(
    hf_dir: str | Path,
    out: str | Path,
    *,
    bits: int = 4,
    group_size: int = DEFAULT_GROUP_SIZE,
    texts: Sequence[str] | None = None,
    calibration: int | None = None,
    chat_template: str = "auto",
    progress: Progress | None = None,
    log_path: str | Path | None = None,
    batch_size: int = 4,
    source: dict[str, Any] | None = None,
) -> Path:
    """Quantize the checkpoint ``hf_dir`` to a GPTQ checkpoint at ``out`` (which must not exist).

    ``texts`` (default: the first ``calibration`` shipped items, all of them if None) calibrate the
    quantization. The output is written to a temporary sibling and renamed, so a crash leaves no
    half-written checkpoint. Raises QuantizationError for a request that cannot work, ModelLoadError
    when GPTQModel is not installed.
    """
    say = progress or (lambda fraction, message: log.info("%s (%.0f%%)", message, 100 * fraction))
    hf_dir, out = Path(hf_dir), Path(out)
    if bits not in BITS:
        raise QuantizationError(f"{bits}-bit GPTQ is not offered: choose {', '.join(map(str, BITS))}")
    config = read_config(hf_dir)
    if config.get("quantization_config") or (hf_dir / "quantize_config.json").exists():
        raise QuantizationError(f"{hf_dir} is already quantized; quantize the full-precision checkpoint")
    check_group_size(config, group_size, model_name=hf_dir.name)
    if out.exists() and any(out.iterdir()):
        raise QuantizationError(f"{out} already exists and is not empty; choose another --out")
    require_gptqmodel()
    template = resolve_chat_template(hf_dir, chat_template)
    texts = list(texts) if texts is not None else calibration_texts(template, calibration)
    if not texts:
        raise QuantizationError("no calibration texts")

    say(0.01, "loading GPTQModel")
    t0 = time.perf_counter()
    import torch

    log_path = Path(log_path) if log_path is not None else None
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _output_to(log_path):
            from gptqmodel import GPTQModel, QuantizeConfig

            _keep_layer_logs_beside(log_path or out.parent / f"{out.name}.log")

            say(0.03, f"loading {hf_dir.name}")
            device = "cuda" if torch.cuda.is_available() else "cpu"
            model = GPTQModel.load(
                str(hf_dir), QuantizeConfig(bits=bits, group_size=group_size), device=device
            )
            layers = _decoder_layers(model.model)
            seen: set[int] = set()

            # GPTQ runs the calibration batches through one block at a time and quantizes it before the
            # next: the first call of each block's forward is the progress.
            def on_block(index: int):
                def hook(module, args):
                    if index not in seen:
                        seen.add(index)
                        say(
                            0.05 + 0.85 * index / max(1, len(layers)),
                            f"quantizing block {index + 1}/{len(layers)}",
                        )

                return hook

            handles = [block.register_forward_pre_hook(on_block(i)) for i, block in enumerate(layers)]
            try:
                model.quantize(texts, batch_size=batch_size)
            finally:
                for handle in handles:
                    handle.remove()
            say(0.92, "saving")
            model.save(str(tmp))
            del model
        _carry_template(tmp, template)
        record = {
            "source": str(hf_dir.resolve()),
            "model_id": hf_dir.name,
            "bits": bits,
            "group_size": group_size,
            "calibration_texts": len(texts),
            "chat_template": template.name,
            "gptqmodel": _version("gptqmodel"),
            "seconds": round(time.perf_counter() - t0, 1),
            **(source or {}),
        }
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2))
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(1.0, f"done in {time.perf_counter() - t0:.0f} s")
    return out


def _carry_template(checkpoint: Path, template) -> None:
    """Write the chat template into the checkpoint when the source's tokenizer had none (a Vicuna model):
    the GPTQ copy then serves with the right prompt format under ``--chat-template auto``."""
    if template.name == "model":
        return  # the tokenizer saved the model's own template with the checkpoint
    (checkpoint / "chat_template.jinja").write_text(standalone_template(template), encoding="utf-8")


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# -- the cached copy ----------------------------------------------------------------------------------
def gptq_cache_name(source: Path, bits: int, group_size: int, calibration: int | None) -> str:
    calibration = calibration or len(calibration_items())  # None and "all of them" are one copy
    calib = hashlib.sha1(CALIBRATION_FILE.read_bytes()).hexdigest()[:8]
    key = hashlib.sha1(f"{weights_key(source)}:{calib}:{calibration}".encode()).hexdigest()[:12]
    return f"{source.stem if source.is_file() else source.name}-gptq-{bits}bit-g{group_size}-{key}"


def ensure_gptq_base(
    source: str | Path,
    cache_dir: str | Path,
    *,
    hf_cache_dir: str | Path,
    bits: int = 4,
    group_size: int = DEFAULT_GROUP_SIZE,
    calibration: int | None = None,
    chat_template: str = "auto",
    progress: Progress | None = None,
    log_path: str | Path | None = None,
) -> Path:
    """A GPTQ copy of ``source`` (a GGUF file, dequantized first into ``hf_cache_dir``, or a Hugging Face
    checkpoint), made once with the shipped calibration texts and cached in ``cache_dir``; a second call
    returns the cached copy at once. Two processes racing both quantize; the first rename wins."""
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise ModelLoadError(f"{source} does not exist")
    target = Path(cache_dir) / gptq_cache_name(source, bits, group_size, calibration)
    if (target / SOURCE_FILE).is_file():
        return target
    if source.is_file():
        if source.suffix != ".gguf":
            raise QuantizationError(f"{source} is neither a .gguf file nor a checkpoint directory")
        from models.hf_base import ensure_hf_base

        if progress:
            progress(0.0, f"dequantizing {source.name} for transformers (once)")
        hf_dir = ensure_hf_base(source, hf_cache_dir)
        origin = {"gguf": str(source)}
    else:
        hf_dir, origin = source, {}
    tmp_out = target.parent / f".build-{target.name}-{os.getpid()}-{threading.get_ident()}"
    try:
        quantize(
            hf_dir,
            tmp_out,
            bits=bits,
            group_size=group_size,
            calibration=calibration,
            chat_template=chat_template,
            progress=progress,
            log_path=log_path,
            source={"model_id": source.stem if source.is_file() else source.name, **origin},
        )
        try:
            tmp_out.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp_out, ignore_errors=True)
    return target


def source_record(path: str | Path) -> dict[str, Any] | None:
    """What :func:`quantize` recorded about a checkpoint it made (None for other checkpoints)."""
    file = Path(path) / SOURCE_FILE
    try:
        return json.loads(file.read_text()) if file.is_file() else None
    except ValueError:
        return None


# -- training -----------------------------------------------------------------------------------------
def prepare_for_training(model) -> int:
    """Keep every GPTQModel CPU layer of ``model`` on its differentiable path; returns how many.

    GPTQModel's CPU layer (TorchAtenLinear) picks its path at its first forward: in eval mode without
    gradients (a generation, a reference pass) it repacks the weights for the ATen int4 kernel, which runs
    under no_grad; from then on no gradient flows through that layer to the LoRA layers before it. A
    training process must never take that path, whatever forward comes first: pinning the layer's mode to
    "train" makes it dequantize and matmul, which autograd differentiates. Layers of other kernels (GPU)
    have no such mode and are left alone.
    """
    pinned = 0
    for module in model.modules():
        if type(module).__name__ == "TorchAtenLinear" and hasattr(module, "linear_mode"):
            module.linear_mode = "train"
            pinned += 1
    return pinned

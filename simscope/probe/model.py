"""Loading a causal LM from disk for the probe stage: device and dtype choice, no downloads.

A model is a local directory or a model id already in the local Hugging Face cache; it is
loaded with ``local_files_only=True`` (nothing is fetched at run time), from safetensors only
(``use_safetensors=True``: no pickle), and with ``trust_remote_code`` off unless the caller
turns it on. Everything that can go wrong because of the user's input is a SimscopeError.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simscope.errors import SimscopeError
from simscope.logs import quiet_transformers
from simscope.storage import hash_file

logger = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, ready for generation and scoring."""

    name: str
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    revision: str
    """The hub commit for a cached model id, else a checksum of the weights and configs."""

    @property
    def start_token_id(self) -> int:
        """The token every text is conditioned on: BOS, or EOS when the model has no BOS."""
        tok = self.tokenizer
        for tid in (tok.bos_token_id, tok.eos_token_id):
            if tid is not None:
                return int(tid)
        raise SimscopeError(
            f"{self.name}: the tokenizer has neither a BOS nor an EOS token; simscope needs one "
            "to start unconditional samples and to score a text's first token"
        )

    @property
    def context(self) -> int | None:
        """The model's context length in positions, when its config says."""
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def max_tokens(self) -> int:
        """The model's context length (positions), or 2048 when the config does not say."""
        return self.context or 2048


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device must be available."""
    import torch

    if device not in DEVICES:
        raise SimscopeError(f"device: expected one of {list(DEVICES)}, found {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SimscopeError("device: 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise SimscopeError(
            "device: 'mps' requested but torch sees no MPS device; use --device cpu"
        )
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` is bfloat16 on a GPU that supports it, float16 on MPS, float32 on the CPU."""
    import torch

    if dtype not in DTYPES:
        raise SimscopeError(f"dtype: expected one of {list(DTYPES)}, found {dtype!r}")
    if dtype != "auto":
        return dtype
    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


def load_model(
    model: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
) -> LoadedModel:
    """Load ``model`` (a local directory or a cached hub id) for generation and scoring."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = str(model)
    path = Path(ref).expanduser()
    is_dir = path.is_dir()
    if not is_dir and (path.exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1):
        found = "a file" if path.exists() else "no such directory"
        raise SimscopeError(
            f"model {ref!r}: expected a model directory (with config.json) or a model id in the "
            f"local Hugging Face cache, found {found}; check the path"
        )
    if is_dir and not (path / "config.json").is_file():
        raise SimscopeError(
            f"model {ref!r}: expected a model directory with config.json, found none; point at "
            "the directory that save_pretrained wrote"
        )
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source = str(path) if is_dir else ref
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
        "revision": revision,
    }
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            lm: Any = AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(torch, dt), use_safetensors=True, **kwargs
            )
    except OSError as e:
        raise SimscopeError(
            f"model {ref!r}: cannot load it from disk or the local Hugging Face cache "
            f"({_first_line(e)}); nothing is downloaded at run time: download it beforehand "
            "(e.g. `huggingface-cli download MODEL`) or give a local path"
        ) from None
    except ValueError as e:
        raise SimscopeError(
            f"model {ref!r}: not loadable as a causal LM ({_first_line(e)}); custom code needs "
            "--trust-remote-code (in a run config: trust_remote_code = true in the candidate's "
            "table), and weights must be safetensors"
        ) from None
    except SafetensorError as e:
        raise SimscopeError(
            f"model {ref!r}: its safetensors weights cannot be read ({_first_line(e)}); the "
            "file is damaged or truncated: download or save the model again"
        ) from None
    if getattr(tokenizer, "vocab_size", 1) == 0 or len(tokenizer) < 2:
        raise SimscopeError(
            f"model {ref!r}: its tokenizer is empty (no tokenizer files beside the weights?); "
            "expected the tokenizer save_pretrained writes"
        )
    lm.to(dev)
    lm.eval()
    commit = getattr(lm.config, "_commit_hash", None)
    rev = str(commit) if commit and not is_dir else _dir_checksum(path.resolve()) if is_dir else ""
    logger.info("loaded %s on %s (%s), revision %s", ref, dev, dt, rev[:12])
    return LoadedModel(
        name=name or ref, model=lm, tokenizer=tokenizer, device=dev, dtype=dt, revision=rev
    )


def model_fingerprint(model: str | Path) -> str:
    """What identifies a model's weights: a checksum of a local directory's weights and
    configs (however its path is spelled), or the model id itself."""
    path = Path(model).expanduser()
    return _dir_checksum(path.resolve()) if path.is_dir() else str(model)


def _dir_checksum(path: Path) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    for p in sorted(path.iterdir()):
        if p.is_file() and (p.suffix in (".json", ".safetensors", ".model", ".txt")):
            h.update(p.name.encode())
            h.update(hash_file(p).encode())
    return h.hexdigest()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__

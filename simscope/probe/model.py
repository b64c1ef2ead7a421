"""Loading a causal LM from disk for the probe stage: device, dtype and threads, no downloads.

A model is a local directory, a model id already in the local Hugging Face cache, or a
``.gguf`` file (llama.cpp's format; de-quantised by transformers into an ordinary model). It
is loaded with ``local_files_only=True`` (nothing is fetched at run time), from safetensors
or GGUF only (``use_safetensors=True``: no pickle), and with ``trust_remote_code`` off unless
the caller turns it on. A GGUF file is de-quantised on every load, or once into a model
directory under the ``gguf_cache`` folder the caller names (safetensors, with a manifest of
the file's checksum; a damaged entry is rebuilt). Everything that can go wrong because of the
user's input is a SimscopeError.

dtype ``auto`` is bfloat16 on a CUDA GPU that supports it and on a CPU that runs bfloat16
matrix products natively, which is decided by timing one against float32 once per process
(an emulating CPU, such as an AVX2-only one, is tens of times slower in bfloat16), else
float32. On the CPU, torch is given no more threads than the CPUs this process may use.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simscope.errors import SimscopeError
from simscope.logs import quiet_transformers
from simscope.storage import atomic_dir, hash_file, read_manifest, slug, write_manifest

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
    """``auto`` is bfloat16 on a GPU that supports it, float16 on MPS, and on the CPU bfloat16
    where :func:`cpu_runs_bf16_natively` measured it fast, else float32."""
    import torch

    if dtype not in DTYPES:
        raise SimscopeError(f"dtype: expected one of {list(DTYPES)}, found {dtype!r}")
    if dtype != "auto":
        return dtype
    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "bfloat16" if cpu_runs_bf16_natively() else "float32"


BF16_NATIVE_SPEEDUP = 1.3
"""How much faster than float32 a bfloat16 matrix product must run on the CPU to count as
native (AMX or AVX512-BF16 give about 2x or more; emulation is 10-50x slower)."""


@functools.cache
def cpu_runs_bf16_natively() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively: timed once per process.

    Decided by measurement, not by a CPU flag (flags are named differently across vendors and
    kernels, and a flag says nothing of the kernels torch ships)."""
    fp32, bf16 = matmul_seconds()
    native = bf16 * BF16_NATIVE_SPEEDUP <= fp32
    logger.info(
        "CPU matmul 256^3: float32 %.2f ms, bfloat16 %.2f ms: bfloat16 %s",
        fp32 * 1e3,
        bf16 * 1e3,
        "native" if native else "emulated, float32 used",
    )
    return native


def matmul_seconds(n: int = 256, rounds: int = 4, fp32_calls: int = 5) -> tuple[float, float]:
    """Fastest seconds of an ``n``-cubed matrix product in float32 and in bfloat16.

    The two are timed in alternating rounds (``fp32_calls`` float32 calls, then one bfloat16
    call), so that a busy machine slows both alike; the rounds stop early once bfloat16 is
    plainly emulated (4x slower than float32 or more)."""
    import torch

    threads = torch.get_num_threads()
    # One thread: a multi-threaded product on a busy machine waits for its slowest thread.
    torch.set_num_threads(1)
    try:
        return _time_products(n, rounds, fp32_calls)
    finally:
        torch.set_num_threads(threads)


def _time_products(n: int, rounds: int, fp32_calls: int) -> tuple[float, float]:
    import torch

    gen = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a16, b16 = a32.to(torch.bfloat16), b32.to(torch.bfloat16)
    a32 @ b32, a16 @ b16  # warm-up: kernel selection, packing buffers

    def seconds(a: Any, b: Any) -> float:
        start = time.perf_counter()
        a @ b
        return time.perf_counter() - start

    fp32 = bf16 = math.inf
    for _ in range(rounds):
        fp32 = min(fp32, *(seconds(a32, b32) for _ in range(fp32_calls)))
        bf16 = min(bf16, seconds(a16, b16))
        if bf16 >= 4 * fp32:
            break
    return fp32, bf16


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def limit_threads() -> int:
    """Lower torch's CPU threads to :func:`usable_cpus` when it has more (more threads than
    CPUs spin against each other); a lower setting, the caller's choice, is kept."""
    import torch

    n = usable_cpus()
    if torch.get_num_threads() > n:
        logger.info("torch threads %d -> %d (usable CPUs)", torch.get_num_threads(), n)
        torch.set_num_threads(n)
    return torch.get_num_threads()


def load_model(
    model: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
    gguf_cache: Path | None = None,
) -> LoadedModel:
    """Load ``model`` (a local directory, a cached hub id or a ``.gguf`` file) for generation
    and scoring. A GGUF file is de-quantised in memory, or once into ``gguf_cache``."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = str(model)
    path = Path(ref).expanduser()
    is_dir = path.is_dir()
    is_gguf = path.is_file() and path.suffix.lower() == ".gguf"
    if (
        not is_dir
        and not is_gguf
        and (path.exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1)
    ):
        found = "a file that is not .gguf" if path.exists() else "no such directory"
        raise SimscopeError(
            f"model {ref!r}: expected a model directory (with config.json), a .gguf file or a "
            f"model id in the local Hugging Face cache, found {found}; check the path"
        )
    if is_dir and not (path / "config.json").is_file():
        raise SimscopeError(
            f"model {ref!r}: expected a model directory with config.json, found none; point at "
            "the directory that save_pretrained wrote"
        )
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if dev == "cpu":
        limit_threads()
    rev = ""
    if is_gguf:
        rev = gguf_revision(path)
        if gguf_cache is not None:
            path, is_dir, is_gguf = _dequantised_dir(path, Path(gguf_cache), rev), True, False
    source = str(path) if is_dir else ref
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
        "revision": revision,
    }
    try:
        with quiet_transformers():
            if is_gguf:
                tokenizer, lm = _read_gguf(path, trust_remote_code=trust_remote_code)
                lm = lm.to(getattr(torch, dt))
            else:
                tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
                lm = AutoModelForCausalLM.from_pretrained(
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
            "table), and weights must be safetensors or GGUF"
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
    if not rev:
        commit = getattr(lm.config, "_commit_hash", None)
        rev = (
            str(commit)
            if commit and not is_dir
            else _dir_checksum(path.resolve())
            if is_dir
            else ""
        )
    logger.info("loaded %s on %s (%s), revision %s", ref, dev, dt, rev[:12])
    return LoadedModel(
        name=name or ref, model=lm, tokenizer=tokenizer, device=dev, dtype=dt, revision=rev
    )


GGUF_KIND = "gguf-model"


def gguf_revision(path: Path) -> str:
    """What identifies a GGUF file's weights: ``gguf:`` and a checksum of its bytes."""
    return "gguf:" + hash_file(path)


def _check_gguf(path: Path) -> None:
    """Refuse a file that is not a readable GGUF model before transformers is handed it."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        arch = reader.get_field("general.architecture")
    except Exception as e:  # any parse failure: the user's file is not what it claims
        raise SimscopeError(
            f"model {str(path)!r}: not a readable GGUF file ({type(e).__name__}: "
            f"{_first_line(e)}); expected a .gguf model written by llama.cpp's tools"
        ) from None
    if arch is None:
        raise SimscopeError(
            f"model {str(path)!r}: the GGUF file has no general.architecture; expected a model "
            "file, not a vocabulary or adapter"
        )


def _read_gguf(path: Path, *, trust_remote_code: bool) -> tuple[Any, Any]:
    """A GGUF file's tokenizer and its de-quantised float32 model (plain torch layers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_gguf(path)
    kwargs: dict[str, Any] = {
        "gguf_file": path.name,
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
    }
    quant: dict[str, Any] = {}
    try:
        from transformers import GgufConfig

        # Always unpack: layers kept in GGUF blocks (when a matmul kernel is installed) would
        # be neither saveable nor scoreable like any other model.
        quant["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always de-quantise GGUF
        pass
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
    with _no_gguf_bar():
        lm: Any = AutoModelForCausalLM.from_pretrained(
            str(path.parent), dtype=torch.float32, **kwargs, **quant
        )
    # De-quantised, the model is ordinary; drop the quantizer so that it saves and casts.
    lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    return tokenizer, lm


@contextmanager
def _no_gguf_bar() -> Iterator[None]:
    """transformers draws its GGUF conversion bar with plain tqdm, past its own switch."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    setattr(gguf_utils, "tqdm", lambda items, *args, **kwargs: items)  # noqa: B010
    try:
        yield
    finally:
        if bar is not None:
            setattr(gguf_utils, "tqdm", bar)  # noqa: B010


def _dequantised_dir(path: Path, cache: Path, rev: str) -> Path:
    """The model directory of GGUF file ``path`` under ``cache``, de-quantised on first use."""
    entry = cache / f"{slug(path.stem)}-{rev.removeprefix('gguf:')[:16]}"
    params = {"gguf": rev}
    if entry.exists():
        try:
            read_manifest(entry, GGUF_KIND, params)
            return entry
        except SimscopeError as e:
            logger.warning("%s; de-quantising %s again", e, path)
    logger.info("de-quantising %s into %s", path, entry)
    with quiet_transformers():
        try:
            tokenizer, lm = _read_gguf(path, trust_remote_code=False)
        except ValueError as e:
            raise SimscopeError(
                f"model {str(path)!r}: not loadable as a causal LM ({_first_line(e)})"
            ) from None
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_dir(entry, overwrite=True, kind=GGUF_KIND) as tmp, quiet_transformers():
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp, GGUF_KIND, {**params, "source": str(path.resolve())})
    return entry


def model_fingerprint(model: str | Path) -> str:
    """What identifies a model's weights: a checksum of a local directory's weights and
    configs or of a GGUF file (however its path is spelled), or the model id itself."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_revision(path)
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

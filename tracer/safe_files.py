"""Files from strangers and files for them: the one place tracer opens report and capture files.

Writes never go through an existing path: the content goes to a new temporary file in the target's directory
(created with O_EXCL by ``tempfile``) that ``os.replace`` then puts in place, so a symlink planted where an output
goes is replaced, not followed. Reads of files named inside a capture stay inside it: every path component is
opened relative to the one before with O_NOFOLLOW, and only regular files are accepted (no links out, no devices,
no FIFOs, which are opened non-blocking so they cannot hang the command). Gzip is inflated in bounded chunks up to
a size cap. Every refusal is a ``UsageError``: one line, exit code 2, and it never quotes the file's content.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import zlib
from pathlib import Path

from .errors import UsageError
from .units import parse_size

# Inflated size above which a gzip file is refused (an env var raises or lowers it).
MAX_INFLATED_ENV = "TRACER_MAX_INFLATED"
DEFAULT_MAX_INFLATED = 4 * 2**30
# Plain (not gzip) files read whole by tracer: manifests, events, holders, reports, baselines, snapshots.
MAX_READ_ENV = "TRACER_MAX_READ"
DEFAULT_MAX_READ = 4 * 2**30
_CHUNK = 1 << 20


def size_setting(env: str, default: int) -> int:
    """A size limit from the environment (`1 GiB`, `4096`), else the default."""
    text = os.environ.get(env)
    if not text:
        return default
    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(f"{env}={text!r}: {exc}") from None


# --- writing ----------------------------------------------------------------------------------------------------

def write_text(path: Path, text: str) -> Path:
    """Create `path` fresh with `text` (UTF-8): a new temporary file in the same directory, then `os.replace`."""
    return write_bytes(path, text.encode("utf-8", "surrogateescape"))


def write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    directory = path.parent
    try:
        if not directory.exists():
            directory.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            raise UsageError(f"{path}: is a directory, expected a file to write")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def write_json(path: Path, data, indent: int | None = 2) -> Path:
    """Strict JSON (no NaN or infinity: a ValueError is tracer's bug, not the user's) written as `write_text`."""
    return write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def prepare_out_dir(path: Path, explicit: bool) -> Path:
    """Make sure `path` is a directory to write into. A directory that is a symlink is accepted only when the user
    named it (`explicit`, e.g. `--out`), not when tracer picked it from its input."""
    path = Path(path)
    if path.is_symlink() and not explicit:
        raise UsageError(f"{path}: the output directory is a symlink; name it with --out to write there anyway")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{path}: exists and is not a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise UsageError(f"{path}: exists and is not a directory")
    return path


def new_sibling_dir(path: Path, suffix: str) -> Path:
    """A directory next to `path` that did not exist before: `<name><suffix>`, then `<name><suffix>-2`, ..."""
    path = Path(path)
    for n in range(1, 1000):
        candidate = path.with_name(path.name + suffix + (f"-{n}" if n > 1 else ""))
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"cannot create {candidate}: {exc.strerror or exc}") from None
    raise UsageError(f"cannot find a free directory name next to {path}")


# --- reading ----------------------------------------------------------------------------------------------------

def _open_flags(final: bool) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    return flags | (os.O_NONBLOCK if final else os.O_DIRECTORY)


def open_inside(root: Path, relative: str | os.PathLike, what: str = "file") -> int:
    """A file descriptor of `root/relative`, a regular file inside `root`: no absolute path, no `..`, no symlink
    on the way (each component is opened with O_NOFOLLOW relative to the one before), no device or FIFO.
    `root` itself may be a symlink: the user named it. The caller closes the descriptor."""
    rel = os.fspath(relative)
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise UsageError(f"{root}: {what} has a bad path")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or any(p in ("..", "") for p in parts):
        raise UsageError(f"{root}: {what} path points outside the capture; refused")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError(f"cannot open {root}: {exc.strerror or exc}") from None
    try:
        for i, part in enumerate(parts):
            if part == ".":
                continue
            final = i == len(parts) - 1
            try:
                nfd = os.open(part, _open_flags(final), dir_fd=fd)
            except OSError as exc:
                if exc.errno in (40, 20):  # ELOOP: a symlink; ENOTDIR: a link or file where a directory goes
                    raise UsageError(f"{root / rel}: {what} is a symlink or not inside the capture; refused") from None
                raise UsageError(f"cannot read {root / rel}: {exc.strerror or exc}") from None
            os.close(fd)
            fd = nfd
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{root / rel}: {what} is not a regular file; refused")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_inside(root: Path, relative: str | os.PathLike, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a regular file inside `root` (see `open_inside`), refused past `limit` bytes."""
    limit = size_setting(MAX_READ_ENV, DEFAULT_MAX_READ) if limit is None else limit
    fd = open_inside(root, relative, what)
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fh.fileno()).st_size > limit:
            raise UsageError(f"{Path(root) / relative}: {what} is larger than {limit} bytes; refused "
                             f"(raise {MAX_READ_ENV} to read it)")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{Path(root) / relative}: {what} is larger than {limit} bytes; refused")
    return data


def read_user_file(path: Path, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a file the user named on the command line: a regular file (the path may be a symlink the
    user chose), refused past `limit` bytes; FIFOs and devices are refused without blocking."""
    path = Path(path)
    limit = size_setting(MAX_READ_ENV, DEFAULT_MAX_READ) if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # checked before fdopen, which refuses a directory with its own error
        os.close(fd)
        raise UsageError(f"{path}: {what} is not a regular file; refused")
    with os.fdopen(fd, "rb") as fh:
        os.set_blocking(fd, True)
        if st.st_size > limit:
            raise UsageError(f"{path}: {what} is larger than {limit} bytes; refused (raise {MAX_READ_ENV})")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{path}: {what} is larger than {limit} bytes; refused (raise {MAX_READ_ENV})")
    return data


def inflate(data: bytes, name: str, limit: int | None = None) -> bytes:
    """Gunzip `data` (all members) in 1 MiB steps, refused once the output passes `limit` bytes (default
    `TRACER_MAX_INFLATED`, 4 GiB)."""
    limit = size_setting(MAX_INFLATED_ENV, DEFAULT_MAX_INFLATED) if limit is None else limit
    out = bytearray()
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(wbits=31)
            pending = rest
            while pending and not d.eof:
                out += d.decompress(pending, _CHUNK)
                pending = d.unconsumed_tail
                if len(out) > limit:
                    raise UsageError(f"cannot load {name}: gzip data inflates past {limit} bytes; refused "
                                     f"(set {MAX_INFLATED_ENV} to allow more)")
            if not d.eof:
                out += d.flush()
                if not d.eof:
                    raise UsageError(f"cannot load {name}: truncated gzip data")
            rest = d.unused_data
            if rest.strip(b"\0") == b"":  # trailing padding, as gzip allows
                break
    except zlib.error as exc:
        raise UsageError(f"cannot load {name}: corrupt gzip data ({exc})") from None
    if len(out) > limit:
        raise UsageError(f"cannot load {name}: gzip data inflates past {limit} bytes; refused")
    return bytes(out)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes, where: str):
    """Strict JSON from untrusted bytes: NaN and infinity refused, as are integers too long to convert and nesting
    too deep to parse; a UsageError names `where` and the line, never the content."""
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not valid JSON (not UTF-8 text)") from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else one_line_reason(exc)
        raise UsageError(f"{where}: not valid JSON ({reason})") from None


def one_line_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def read_json(path: Path, what: str, hint: str = "") -> object:
    """A JSON file the user named (a report, a baseline, a rules file): parsed strictly; a UsageError naming
    `what` when it is missing, not a regular file or not JSON."""
    path = Path(path)
    if not os.path.lexists(path):
        raise UsageError(f"{what} {path}: no such file" + (f" ({hint})" if hint else ""))
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a directory, not a file")
    return parse_json(read_user_file(path, what), f"{what} {path}")


def require_schema(data: object, schema: str, where: str, kind: str) -> dict:
    """`data` as a dict of the given schema; a UsageError naming `where` when it is not (a `kind` is expected)."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a tracer {kind} (a JSON object is expected)")
    if data.get("schema") != schema:
        raise UsageError(f"{where}: schema {one_line_reason(repr(data.get('schema')))[:60]}, expected {schema!r}")
    return data

"""Image reading and writing for the command line: PNG, JPEG, TIFF (8/16-bit, float) and NPY.

Working units
-------------
Images are read into float64 arrays of shape ``(C, H, W)`` (``C`` = 1 or 3) in *working units*: integer images
are scaled to ``[0, 1]`` (8-bit divided by 255, 16-bit by 65535, as :func:`skimage.img_as_float` does) and float
images (TIFF, NPY) are used as stored. Noise levels, weights, ``result.npz`` and float TIFF outputs are all in
these units; :class:`ImageMeta` records the scale to go back.

Output PNGs keep the input's bit depth and range: an 8-bit input gives 8-bit PNGs on the same 0-255 scale, a
16-bit input 16-bit PNGs on the 0-65535 scale, and a float input gives 16-bit PNGs spanning the input's own
``[min, max]`` (recorded in the summary). Every file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from invprob.apps.errors import CLIError
from invprob.results import atomic_write_bytes

__all__ = [
    "normal_permissions",
    "safe_message",
    "publish_directory",
    "staged_directory",
    "IMAGE_SUFFIXES",
    "ImageMeta",
    "encode_png",
    "is_volume_input",
    "read_image",
    "read_volume",
    "save_image",
    "write_png",
    "write_tiff",
    "write_tiff_stack",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
MIN_SIDE = 8


@dataclass(frozen=True)
class ImageMeta:
    """Where an image came from and how to write results back in its own format.

    Attributes
    ----------
    path : str
    format : str
        ``"png"``, ``"jpeg"``, ``"tiff"`` or ``"npy"``.
    dtype : str
        The stored dtype (``"uint8"``, ``"uint16"``, ``"float32"``, ...).
    kind : str
        ``"uint8"``, ``"uint16"`` or ``"float"``: the bit depth of the PNGs written for it.
    scale : float
        Stored value = working value * ``scale`` (255, 65535, or 1 for float images).
    channels : int
        1 (grey) or 3 (RGB) after dropping any alpha channel.
    shape : tuple
        ``(H, W)``; ``(D, H, W)`` for a volume (:func:`read_volume`).
    value_range : tuple
        ``(min, max)`` of the image in working units; float images map this range onto the PNG scale.
    alpha_dropped : bool
    volume : bool
        True for a 3-D stack read by :func:`read_volume`.
    """

    path: str
    format: str
    dtype: str
    kind: str
    scale: float
    channels: int
    shape: tuple[int, ...]
    value_range: tuple[float, float]
    alpha_dropped: bool = False
    volume: bool = False

    def png_range(self) -> tuple[float, float]:
        """Working-unit values mapped to the PNG's 0 and full scale."""
        if self.kind in ("uint8", "uint16"):
            return 0.0, 1.0
        lo, hi = self.value_range
        return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _format_of(path: Path) -> str:
    s = path.suffix.lower()
    return {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}.get(s, "")


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png_header(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` of a PNG file, or None if it is not one."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIG or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _png16_encode(img: np.ndarray) -> bytes:
    """16-bit PNG bytes of a ``uint16`` ``(H, W)`` or ``(H, W, 3)`` array (Pillow cannot write 16-bit RGB)."""
    import struct
    import zlib

    img = np.ascontiguousarray(img, dtype=">u2")
    H, W = img.shape[:2]
    ctype = 2 if img.ndim == 3 else 0
    rows = img.reshape(H, -1).view(np.uint8)  # big-endian bytes per row
    bpp = 6 if ctype == 2 else 2
    sub = rows.astype(np.int16)
    sub[:, bpp:] -= rows[:, :-bpp]
    filtered = np.concatenate([np.ones((H, 1), np.uint8), (sub % 256).astype(np.uint8)], axis=1)  # filter 1 (Sub)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", W, H, 16, ctype, 0, 0, 0)
    return (_PNG_SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6))
            + chunk(b"IEND", b""))


def _png16_decode(path: Path) -> np.ndarray:
    """Decode a non-interlaced 16-bit RGB/RGBA/grey-alpha PNG (Pillow reads these as 8-bit)."""
    import struct
    import zlib

    buf = Path(path).read_bytes()
    pos, idat, hdr = 8, [], None
    while pos + 8 <= len(buf):
        n = struct.unpack(">I", buf[pos : pos + 4])[0]
        tag = buf[pos + 4 : pos + 8]
        body = buf[pos + 8 : pos + 8 + n]
        if tag == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
        pos += 12 + n
    if hdr is None:
        raise ValueError("no IHDR chunk")
    W, H, depth, ctype, _, _, interlace = hdr
    if interlace:
        raise ValueError("interlaced 16-bit colour PNGs are not supported; save it as TIFF")
    nch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    bpp = 2 * nch
    stride = W * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(H, stride + 1)
    out = np.zeros((H, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for i in range(H):
        f, row = raw[i, 0], raw[i, 1:].astype(np.int32)
        if f == 0:
            cur = row
        elif f == 1:  # Sub: running sum mod 256 within each byte position of a pixel
            cur = np.cumsum(row.reshape(W, bpp), axis=0).reshape(-1) % 256
        elif f == 2:
            cur = (row + prev) % 256
        else:  # Average (3) or Paeth (4): sequential along the row
            cur = np.zeros(stride, np.int32)
            for j in range(stride):
                a = cur[j - bpp] if j >= bpp else 0
                b = prev[j]
                if f == 3:
                    cur[j] = (row[j] + (a + b) // 2) % 256
                else:
                    c = prev[j - bpp] if j >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                    cur[j] = (row[j] + pred) % 256
        out[i] = cur
        prev = cur
    img = out.view(">u2").reshape(H, W, nch).astype(np.uint16)
    return img[..., 0] if nch == 1 else img


def _load_npy(path: Path) -> np.ndarray:
    """An NPY image, memory-mapped first: a header that declares more data than the file holds (a 1 KB file
    declaring 3 GB) fails before anything is allocated; object arrays are never unpickled."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "mmap length" in str(exc) or "cannot mmap" in str(exc).lower():
            raise ValueError("truncated: its header declares more data than the file holds") from None
        raise
    return np.array(mapped)


def safe_message(exc: BaseException) -> str:
    """The first line of an exception's message, without numpy's advice to load pickled data unsafely."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "pickle" in msg.lower():
        return "it holds pickled (object) data, which invprob never loads, or is not a valid NumPy file"
    return msg


def _load_raw(path: Path, fmt: str) -> np.ndarray:
    if fmt == "png":
        head = _png_header(path)
        if head is not None and head[0] == 16 and head[1] in (2, 4, 6):
            return _png16_decode(path)
    if fmt == "npy":
        return _load_npy(path)
    if fmt == "tiff":
        import tifffile

        return tifffile.imread(path)
    import imageio.v3 as iio

    return iio.imread(path)


def read_image(path: str | Path, *, name: str = "input") -> tuple[np.ndarray, ImageMeta]:
    """Read an image as a float64 ``(C, H, W)`` array in working units, and its :class:`ImageMeta`.

    Grey (``H x W``), RGB and RGBA (the alpha channel is dropped with a ``UserWarning``) images are accepted,
    channels last (image files, NPY) or first (planar TIFF/NPY with 1, 3 or 4 leading channels).

    Raises
    ------
    CLIError
        Missing or unreadable file, unsupported layout or dtype, an image smaller than 8 pixels a side, or
        NaN/Inf pixels: one line naming the file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(p, np.zeros((16, 16)))
    >>> arr, meta = read_image(p)
    >>> arr.shape, meta.kind
    ((1, 16, 16), 'float')
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise CLIError(f"{name} {path} is a broken or looping symbolic link")
    if not path.exists():
        raise CLIError(f"{name} file not found: {path}")
    if not path.is_file():
        raise CLIError(f"{name} is not a file: {path}")
    fmt = _format_of(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # imageio's plugin probing on odd files
            raw = np.asarray(_load_raw(path, fmt))
    except Exception as exc:  # any decoder failure is a user error about this file
        raise CLIError(f"cannot read {name} image {path}: {safe_message(exc)}") from None
    if not fmt:
        fmt = "image"
    if raw.dtype == object or raw.dtype.kind not in "uif" or raw.size == 0:
        raise CLIError(f"cannot read {name} image {path}: unsupported data (dtype {raw.dtype}, shape {raw.shape})")
    if raw.dtype.kind in "ui" and raw.dtype not in (np.uint8, np.uint16):
        raise CLIError(f"{name} image {path} is {raw.dtype}: integer images must be 8- or 16-bit unsigned (scaled "
                       "to [0, 1]); save other integers as float to use their values as they are")
    raw = np.squeeze(raw) if raw.ndim > 3 else raw
    if raw.ndim == 2:
        arr = raw[None]
    elif raw.ndim == 3 and raw.shape[-1] in (1, 2, 3, 4) and raw.shape[0] > 4:
        arr = np.moveaxis(raw, -1, 0)
    elif raw.ndim == 3 and raw.shape[0] in (1, 2, 3, 4):
        arr = raw
    else:
        raise CLIError(f"{name} image {path} has shape {raw.shape}; "
                       "expected H x W, H x W x 3 (RGB) or H x W x 4 (RGBA) (a 3-D stack: invprob deblur --volume)")
    alpha = arr.shape[0] in (2, 4)
    if alpha:
        warnings.warn(f"{name} image {path.name} has an alpha channel; it is ignored", UserWarning, stacklevel=2)
        arr = arr[:-1]
    if raw.dtype == np.uint8:
        kind, scale = "uint8", 255.0
    elif raw.dtype == np.uint16:
        kind, scale = "uint16", 65535.0
    else:
        kind, scale = "float", 1.0
    arr = arr.astype(np.float64) / scale
    H, W = arr.shape[-2:]
    if min(H, W) < MIN_SIDE:
        raise CLIError(f"{name} image {path} is {H}x{W} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise CLIError(f"{name} image {path} has {int(bad.sum())} NaN or Inf pixel value(s)")
    meta = ImageMeta(
        path=str(path), format=fmt, dtype=str(raw.dtype), kind=kind, scale=scale, channels=int(arr.shape[0]),
        shape=(int(H), int(W)), value_range=(float(arr.min()), float(arr.max())), alpha_dropped=bool(alpha),
    )
    return arr, meta


#: How ``invprob deblur`` tells a volume from an image (its ``--help`` says the same).
VOLUME_RULE = ("INPUT is a volume (a 3-D stack) when it is a TIFF with more than one page, or, with --volume, a 3-D "
               "TIFF/NPY array (D, H, W) or a 4-D NPY array (C, D, H, W); anything else is a 2-D image (an NPY of "
               "shape (3, H, W) stays an RGB image unless --volume is given)")


def _tiff_pages(path: Path) -> int:
    """The number of pages of a TIFF file (0 when it cannot be read: the reader then says why)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            return len(tf.pages)
    except Exception:  # unreadable: read_image / read_volume report it
        return 0


def is_volume_input(path: str | Path, volume: bool = False) -> bool:
    """Whether ``path`` is read as a volume (:data:`VOLUME_RULE`): a multi-page TIFF, or with ``volume`` any
    TIFF/NPY (:func:`read_volume` then checks its shape)."""
    path = Path(path)
    fmt = _format_of(path)
    if volume:
        return fmt in ("tiff", "npy")
    return fmt == "tiff" and path.is_file() and _tiff_pages(path) > 1


def _volume_layout(raw: np.ndarray, name: str, path: Path) -> np.ndarray:
    """``(C, D, H, W)`` from a stack ``(D, H, W)``, ``(D, H, W, C)`` (C = 3 or 4) or ``(C, D, H, W)`` (C = 1 or 3)."""
    raw = np.squeeze(raw) if raw.ndim > 4 else raw  # e.g. ImageJ hyperstacks with unit axes
    if raw.ndim == 3:
        return raw[None]
    if raw.ndim == 4 and raw.shape[-1] in (3, 4) and raw.shape[0] > 4:
        return np.moveaxis(raw, -1, 0)
    if raw.ndim == 4 and raw.shape[0] in (1, 3, 4):
        return raw
    raise CLIError(f"{name} stack {path} has shape {raw.shape}; expected D x H x W, D x H x W x 3 or "
                   "C x D x H x W (C = 1 or 3)")


def read_volume(path: str | Path, *, name: str = "input") -> tuple[np.ndarray, ImageMeta]:
    """Read a 3-D stack (multi-page TIFF or NPY) as a float64 ``(C, D, H, W)`` array in working units.

    Integer stacks (8/16-bit) are scaled to ``[0, 1]`` as :func:`read_image` does, float stacks used as stored;
    an alpha channel is dropped with a ``UserWarning``.

    Raises
    ------
    CLIError
        Missing or unreadable file, unsupported layout or dtype, fewer than 2 planes or 8 pixels a side, or
        NaN/Inf voxels: one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{name} file not found: {path}")
    fmt = _format_of(path)
    if fmt not in ("tiff", "npy"):
        raise CLIError(f"{name} {path}: a volume must be a multi-page .tif/.tiff or an .npy stack")
    try:
        raw = np.asarray(_load_raw(path, fmt))
    except Exception as exc:  # any decoder failure is a user error about this file
        raise CLIError(f"cannot read {name} stack {path}: {safe_message(exc)}") from None
    if raw.dtype == object or raw.dtype.kind not in "uif" or raw.size == 0:
        raise CLIError(f"cannot read {name} stack {path}: unsupported data (dtype {raw.dtype}, shape {raw.shape})")
    if raw.dtype.kind in "ui" and raw.dtype not in (np.uint8, np.uint16):
        raise CLIError(f"{name} stack {path} is {raw.dtype}: integer stacks must be 8- or 16-bit unsigned")
    arr = _volume_layout(raw, name, path)
    alpha = arr.shape[0] == 4
    if alpha:
        warnings.warn(f"{name} stack {path.name} has an alpha channel; it is ignored", UserWarning, stacklevel=2)
        arr = arr[:3]
    kind, scale = {np.dtype(np.uint8): ("uint8", 255.0), np.dtype(np.uint16): ("uint16", 65535.0)}.get(
        raw.dtype, ("float", 1.0))
    arr = arr.astype(np.float64) / scale
    D, H, W = arr.shape[-3:]
    if D < 2 or min(H, W) < MIN_SIDE:
        raise CLIError(f"{name} stack {path} is {D}x{H}x{W} voxels; at least 2 planes of {MIN_SIDE}x{MIN_SIDE} "
                       "are needed")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise CLIError(f"{name} stack {path} has {int(bad.sum())} NaN or Inf voxel value(s)")
    meta = ImageMeta(path=str(path), format=fmt, dtype=str(raw.dtype), kind=kind, scale=scale,
                     channels=int(arr.shape[0]), shape=(int(D), int(H), int(W)),
                     value_range=(float(arr.min()), float(arr.max())), alpha_dropped=bool(alpha), volume=True)
    return arr, meta


def write_tiff_stack(path: str | Path, arr: np.ndarray) -> None:
    """Write a volume ``(C, D, H, W)`` as a float32 multi-page TIFF (one page per plane; grey ``D x H x W``, RGB
    ``D x H x W x 3``), atomically."""
    import tifffile

    a = np.asarray(arr, dtype=np.float32)
    data = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    buf = _io.BytesIO()
    tifffile.imwrite(buf, data, photometric="minisblack" if data.ndim == 3 else "rgb")
    atomic_write_bytes(path, buf.getvalue())


def _hwc(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 4:
        arr = arr[0]
    if arr.ndim == 3:
        return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    return arr


def encode_png(arr: np.ndarray, kind: str, lo: float = 0.0, hi: float = 1.0) -> bytes:
    """PNG bytes of a ``(C, H, W)`` or ``(H, W)`` array: ``[lo, hi]`` maps to ``0..2^bits-1`` (clipped).

    ``kind`` is ``"uint8"`` or anything else for 16 bits (``"uint16"``, ``"float"``).
    """
    import imageio.v3 as iio

    dtype = np.uint8 if kind == "uint8" else np.uint16
    top = float(np.iinfo(dtype).max)
    scaled = (np.asarray(arr, dtype=np.float64) - lo) / (hi - lo if hi > lo else 1.0)
    out = _hwc(np.rint(np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0) * top).astype(dtype))
    if dtype == np.uint16:
        return _png16_encode(out)
    return iio.imwrite("<bytes>", out, extension=".png")


def write_png(path: str | Path, arr: np.ndarray, meta: ImageMeta, *,
              value_range: tuple[float, float] | None = None) -> dict:
    """Write ``arr`` (working units) as a PNG with the input's bit depth; returns the mapping used.

    ``value_range`` overrides the mapping (used for the std map, shown on its own scale).
    """
    lo, hi = value_range if value_range is not None else meta.png_range()
    kind = "uint8" if meta.kind == "uint8" else "uint16"
    atomic_write_bytes(path, encode_png(arr, kind, lo, hi))
    return {"bits": 8 if kind == "uint8" else 16, "black": float(lo), "white": float(hi)}


def write_tiff(path: str | Path, arr: np.ndarray) -> None:
    """Write ``arr`` as a float32 TIFF (grey ``H x W`` or RGB ``H x W x 3``), atomically."""
    import tifffile

    buf = _io.BytesIO()
    data = _hwc(np.asarray(arr, dtype=np.float32))
    tifffile.imwrite(buf, data, photometric="rgb" if data.ndim == 3 else "minisblack")
    atomic_write_bytes(path, buf.getvalue())


def write_npy(path: str | Path, arr: np.ndarray) -> None:
    buf = _io.BytesIO()
    np.save(buf, _hwc(np.asarray(arr)), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def save_image(path: str | Path, arr: np.ndarray, meta: ImageMeta) -> str:
    """Write one image by its suffix: PNG/JPEG-free formats only (PNG keeps the bit depth of ``meta``).

    ``.png``: the input's bit depth and range, clipped; ``.tif``/``.tiff``: float32 in working units;
    ``.npy``: float64 in working units (``H x W`` or ``H x W x 3``). Returns the format written.
    """
    fmt = _format_of(Path(path))
    if fmt == "png":
        write_png(path, arr, meta)
    elif fmt == "tiff":
        write_tiff(path, arr)
    elif fmt == "npy":
        write_npy(path, np.asarray(arr, dtype=np.float64))
    else:
        raise CLIError(f"cannot write {path}: use a .png, .tif/.tiff or .npy file name")
    return fmt


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_permissions(path: Path) -> None:
    """Give a finished output the usual permissions (temporary files are created private, 0600/0700)."""
    mask = _umask()
    if path.is_dir():
        for p in path.iterdir():
            p.chmod(0o666 & ~mask)
        path.chmod(0o777 & ~mask)
    else:
        path.chmod(0o666 & ~mask)


def publish_directory(tmp: Path, out: Path) -> None:
    """Move the finished temporary folder into place, replacing ``out`` (already checked) if it exists.

    The folder gets its mark (:data:`invprob.apps.common.OUTPUT_MARK`, the list of its files) first, so that a
    later ``--force`` may replace it and nothing else. If the final rename fails, ``out`` is put back and the
    set-aside copy removed: no stray ``.NAME.old-*`` folder is left.
    """
    import json

    from invprob.apps.common import OUTPUT_MARK

    files = sorted(p.name for p in tmp.iterdir())
    atomic_write_bytes(tmp / OUTPUT_MARK, json.dumps({"tool": "invprob", "files": files}).encode())
    normal_permissions(tmp)
    if not out.exists():
        os.replace(tmp, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.replace(out, trash / out.name)
    except OSError as exc:
        shutil.rmtree(trash, ignore_errors=True)
        raise CLIError(f"cannot replace {out}: {exc.strerror or exc}") from None
    try:
        os.replace(tmp, out)
    except OSError as exc:
        os.replace(trash / out.name, out)
        shutil.rmtree(trash, ignore_errors=True)
        raise CLIError(f"cannot replace {out}: {exc.strerror or exc}") from None
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(out: Path):
    """Write a command's outputs into a temporary folder beside ``out``; when the block ends normally the folder
    is published as ``out`` (:func:`publish_directory`), when it raises (Ctrl-C included) it is removed and
    ``out`` is left as it was. Signals are deferred while the block runs
    (:func:`invprob.apps.signals.deferred`): a run that is writing finishes writing."""
    from invprob.apps.signals import ACTIVE_STAGING, deferred

    parent = Path(out).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{Path(out).name}.tmp-", dir=parent))
    ACTIVE_STAGING.add(tmp)
    try:
        with deferred():
            try:
                yield tmp
                publish_directory(tmp, Path(out))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    finally:
        ACTIVE_STAGING.discard(tmp)

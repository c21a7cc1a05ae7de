"""Image I/O of the command line: formats, bit depths, layouts, alpha, errors, atomic writes."""

from __future__ import annotations

import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from invprob.apps.errors import CLIError
from invprob.apps.io import encode_png, read_image, save_image, write_png, write_tiff


@pytest.fixture
def grey():
    return np.random.default_rng(0).random((20, 30))


def test_png_8bit_roundtrip_keeps_bit_depth_and_scale(tmp_path, grey):
    u8 = np.rint(grey * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", u8)
    arr, meta = read_image(tmp_path / "a.png")
    assert arr.shape == (1, 20, 30) and arr.dtype == np.float64
    assert meta.kind == "uint8" and meta.scale == 255 and meta.channels == 1 and meta.format == "png"
    np.testing.assert_allclose(arr[0], u8 / 255.0)
    info = write_png(tmp_path / "b.png", arr, meta)
    back = iio.imread(tmp_path / "b.png")
    assert back.dtype == np.uint8 and info["bits"] == 8
    np.testing.assert_array_equal(back, u8)


def test_png_16bit_roundtrip(tmp_path, grey):
    u16 = np.rint(grey * 4095).astype(np.uint16)  # a 12-bit camera in a 16-bit file: range kept, not stretched
    iio.imwrite(tmp_path / "a.png", u16)
    arr, meta = read_image(tmp_path / "a.png")
    assert meta.kind == "uint16" and meta.scale == 65535
    np.testing.assert_allclose(arr[0], u16 / 65535.0)
    write_png(tmp_path / "b.png", arr, meta)
    back = iio.imread(tmp_path / "b.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, u16)


def test_rgb_png_and_rgba_alpha_dropped_with_warning(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (16, 24, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    with pytest.warns(UserWarning, match="alpha"):
        arr, meta = read_image(tmp_path / "rgba.png")
    assert arr.shape == (3, 16, 24) and meta.channels == 3 and meta.alpha_dropped
    np.testing.assert_allclose(np.moveaxis(arr, 0, -1), rgba[..., :3] / 255.0)
    iio.imwrite(tmp_path / "rgb.png", rgba[..., :3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arr2, meta2 = read_image(tmp_path / "rgb.png")
    assert arr2.shape == (3, 16, 24) and not meta2.alpha_dropped
    write_png(tmp_path / "out.png", arr2, meta2)
    np.testing.assert_array_equal(iio.imread(tmp_path / "out.png"), rgba[..., :3])


def test_jpeg(tmp_path):
    rgb = (np.random.default_rng(2).random((16, 16, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.jpg", rgb)
    arr, meta = read_image(tmp_path / "a.jpg")
    assert arr.shape == (3, 16, 16) and meta.kind == "uint8" and meta.format == "jpeg"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_tiff_dtypes(tmp_path, grey, dtype):
    if np.issubdtype(dtype, np.integer):
        raw = np.rint(grey * np.iinfo(dtype).max).astype(dtype)
        expect = raw / float(np.iinfo(dtype).max)
    else:
        raw = (grey * 1000 - 3).astype(dtype)  # float: used as stored, any range
        expect = raw.astype(np.float64)
    tifffile.imwrite(tmp_path / "a.tif", raw)
    arr, meta = read_image(tmp_path / "a.tif")
    np.testing.assert_allclose(arr[0], expect, rtol=1e-6)
    assert meta.format == "tiff"
    assert meta.kind == ("float" if dtype in (np.float32, np.float64) else np.dtype(dtype).name)


def test_float_input_png_spans_its_own_range(tmp_path, grey):
    raw = grey * 1000 - 3
    np.save(tmp_path / "a.npy", raw)
    arr, meta = read_image(tmp_path / "a.npy")
    assert meta.kind == "float" and meta.scale == 1.0
    lo, hi = meta.png_range()
    assert lo == pytest.approx(raw.min()) and hi == pytest.approx(raw.max())
    info = write_png(tmp_path / "b.png", arr, meta)
    back = iio.imread(tmp_path / "b.png")
    assert back.dtype == np.uint16 and info["bits"] == 16
    assert back.min() == 0 and back.max() == 65535
    np.testing.assert_allclose(back / 65535.0 * (hi - lo) + lo, raw, atol=(hi - lo) / 65535)


def test_npy_layouts(tmp_path):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "hwc.npy", rng.random((12, 14, 3)))
    np.save(tmp_path / "chw.npy", rng.random((3, 12, 14)))
    np.save(tmp_path / "hw1.npy", rng.random((12, 14, 1)).astype(np.float32))
    assert read_image(tmp_path / "hwc.npy")[0].shape == (3, 12, 14)
    assert read_image(tmp_path / "chw.npy")[0].shape == (3, 12, 14)
    assert read_image(tmp_path / "hw1.npy")[0].shape == (1, 12, 14)


def test_errors_are_one_line_cli_errors(tmp_path):
    with pytest.raises(CLIError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(CLIError, match="cannot read"):
        read_image(tmp_path / "bad.png")
    a = np.zeros((16, 16))
    a[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(CLIError, match="1 NaN"):
        read_image(tmp_path / "nan.npy")
    np.save(tmp_path / "tiny.npy", np.zeros((4, 40)))
    with pytest.raises(CLIError, match="at least"):
        read_image(tmp_path / "tiny.npy")
    np.save(tmp_path / "cube.npy", np.zeros((10, 10, 10)))
    with pytest.raises(CLIError, match="shape"):
        read_image(tmp_path / "cube.npy")
    np.save(tmp_path / "bool.npy", np.zeros((10, 10), dtype=bool))
    with pytest.raises(CLIError, match="unsupported"):
        read_image(tmp_path / "bool.npy")
    for err in (CLIError("a\nb"),):
        assert "\n" not in str(err)


def test_save_image_by_suffix_and_atomic(tmp_path, grey):
    u8 = np.rint(grey * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", u8)
    arr, meta = read_image(tmp_path / "a.png")
    y = arr + 0.3  # clipped in PNG, exact in TIFF and NPY
    assert save_image(tmp_path / "o.png", y, meta) == "png"
    assert save_image(tmp_path / "o.tiff", y, meta) == "tiff"
    assert save_image(tmp_path / "o.npy", y, meta) == "npy"
    assert iio.imread(tmp_path / "o.png").max() == 255
    np.testing.assert_allclose(tifffile.imread(tmp_path / "o.tiff"), y[0], rtol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), y[0])
    with pytest.raises(CLIError):
        save_image(tmp_path / "o.bmp", y, meta)
    # no temporary files left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_write_tiff_rgb_float32(tmp_path):
    x = np.random.default_rng(4).random((3, 10, 12))
    write_tiff(tmp_path / "x.tiff", x)
    back = tifffile.imread(tmp_path / "x.tiff")
    assert back.dtype == np.float32 and back.shape == (10, 12, 3)
    np.testing.assert_allclose(np.moveaxis(back, -1, 0), x, rtol=1e-6)


def test_encode_png_clips_and_maps():
    x = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]] * 8)
    out = iio.imread(encode_png(x, "uint8"))
    np.testing.assert_array_equal(out[0], [0, 0, 128, 255, 255])


def _png16_with_filters(img: np.ndarray, filters: list[int]) -> bytes:
    """Reference encoder (pure Python) using the given PNG filter type per row."""
    import struct
    import zlib

    H, W = img.shape[:2]
    nch = 1 if img.ndim == 2 else img.shape[2]
    rows = np.ascontiguousarray(img, dtype=">u2").reshape(H, -1).view(np.uint8).astype(int)
    bpp = 2 * nch
    out = b""
    prev = [0] * rows.shape[1]
    for i in range(H):
        f, row, enc = filters[i % len(filters)], list(rows[i]), []
        for j, x in enumerate(row):
            a = row[j - bpp] if j >= bpp else 0
            b = prev[j]
            c = prev[j - bpp] if j >= bpp else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            enc.append((x - pred) % 256)
        out += bytes([f] + enc)
        prev = row

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[nch]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
def test_png_16bit_colour_every_filter(tmp_path, channels):
    """Pillow reads 16-bit colour PNGs as 8-bit: our decoder must keep all 16 bits, for every PNG filter."""
    img = np.random.default_rng(5).integers(0, 65536, (10, 9, channels)).astype(np.uint16)
    (tmp_path / "c.png").write_bytes(_png16_with_filters(img, [0, 1, 2, 3, 4]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr, meta = read_image(tmp_path / "c.png")
    assert meta.kind == "uint16" and arr.shape == (3, 10, 9)
    np.testing.assert_array_equal(np.rint(arr * 65535).astype(np.uint16), np.moveaxis(img[..., :3], -1, 0))
    write_png(tmp_path / "d.png", arr, meta)  # and writes them back as 16-bit RGB
    back, meta2 = read_image(tmp_path / "d.png")
    assert meta2.kind == "uint16"
    np.testing.assert_array_equal(back, arr)

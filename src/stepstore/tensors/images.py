"""Images: ``stepstore.Image`` for ``run.log`` and ``image_grid`` for sample grids."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from ..errors import InvalidValueError
from ..values import require_unicode

#: PIL modes whose pixels are not gray, RGB or RGBA values: converted before reading.
_PIL_CONVERT = {"P", "PA", "LA", "La", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


#: What an out-of-range error suggests.
_FIX_RANGE = (
    "pass normalize=True to map the pixels' min..max to 0..255, or scale them to 0..1 "
    "(floats) or 0..255 (integers)"
)


def _open_file(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """The pixels of an image file (anything Pillow opens: PNG, JPEG, ...)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as image:
            return _to_numpy(image, what)
    except FileNotFoundError:
        raise InvalidValueError(
            f"{what}: no file {os.fspath(path)!r}; expected an array, a PIL image or the "
            "path of an image file"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidValueError(
            f"{what}: cannot read {os.fspath(path)!r} as an image ({exc}); expected a file "
            "Pillow opens (PNG, JPEG, ...)"
        ) from None


def _to_numpy(data: Any, what: str) -> np.ndarray:
    if isinstance(data, (str, os.PathLike)):
        return _open_file(data, what)
    module = type(data).__module__ or ""
    if module.startswith("PIL") and getattr(data, "mode", None) in _PIL_CONVERT:
        alpha = "A" in data.mode or "a" in data.mode or "transparency" in data.info
        data = data.convert("RGBA" if alpha else "RGB")
    if module.startswith("torch"):
        data = data.detach().cpu()
        if str(data.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            data = data.float()
        data = data.resolve_conj().resolve_neg()
    try:
        return np.asarray(data)
    except (TypeError, ValueError, RuntimeError) as exc:  # ragged lists, odd objects
        shown = repr(data)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InvalidValueError(
            f"{what}: cannot read {shown} of type {type(data).__name__} as an array ({exc}); "
            "expected a NumPy array, torch tensor or PIL image"
        ) from None


def _normalized(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as float64 with its min..max mapped to 0..1 (a constant array: all 0)."""
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidValueError(
            f"{what}: cannot normalize {'NaN' if np.isnan(values).any() else 'inf'} pixels; "
            "replace them first (e.g. numpy.nan_to_num)"
        )
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def to_uint8_hwc(data: Any, what: str = "image", normalize: bool = False) -> np.ndarray:
    """An image as a uint8 ``HxW`` (grayscale) or ``HxWxC`` (C = 3 or 4) array.

    Accepts the path of an image file, PIL images and NumPy/torch arrays, HWC or CHW, with
    at least one pixel: uint8 (copied), bool (0 or 255), other integers in [0, 255], or
    float in [0, 1] (times 255 in float64, rounded half to even). With ``normalize`` any
    real pixels are mapped from their min..max to 0..255 instead (a constant image is
    black). A 3-d torch tensor whose first dimension is 1, 3 or 4 is taken as CHW (torch's
    convention); a NumPy array as HWC unless its last dimension cannot be channels. Raises
    ``InvalidValueError`` naming ``what`` and the fix otherwise.
    """
    torch_like = (type(data).__module__ or "").startswith("torch")
    array = _to_numpy(data, what)
    channels_first = array.ndim == 3 and array.shape[0] in (1, 3, 4)
    if channels_first and (torch_like or array.shape[-1] not in (1, 3, 4)):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InvalidValueError(
            f"{what}: shape {array.shape} is not an image; expected HxW, HxWxC or CxHxW "
            "with C in 1, 3, 4"
        )
    if array.size == 0:
        raise InvalidValueError(f"{what}: shape {array.shape} has no pixels")
    if normalize and array.dtype.kind in "fiu":
        array = _normalized(array, what)
    if array.dtype == np.uint8:  # a copy: the caller may reuse its buffer after log()
        return np.array(array, order="C")
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = "NaN" if np.isnan(array).any() else "inf"
            raise InvalidValueError(
                f"{what}: float pixels must be finite and in [0, 1] (got {bad} pixels); "
                "replace them first (e.g. numpy.nan_to_num)"
            )
        if array.min() < 0 or array.max() > 1:
            raise InvalidValueError(
                f"{what}: float pixels must be finite and in [0, 1] (got min {array.min()}, max "
                f"{array.max()}); {_FIX_RANGE}"
            )
        # in float64 whatever the input precision, so float16/32/64 pixels convert alike
        return np.round(array.astype(np.float64) * 255).astype(np.uint8)
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise InvalidValueError(
                f"{what}: integer pixels must be in [0, 255] "
                f"(got min {array.min()}, max {array.max()}); {_FIX_RANGE}"
            )
        return array.astype(np.uint8)
    raise InvalidValueError(
        f"{what}: dtype {array.dtype} is not an image dtype; expected uint8, bool, an "
        "integer type with values in [0, 255] or a float type with values in [0, 1]"
    )


class Image:
    """An image to log: ``run.log({"samples": stepstore.Image(array, caption="epoch 3")})``.

    ``data`` is the path of an image file, a PIL image or a NumPy/torch array (HxW, HxWxC or
    CxHxW with C in 1, 3, 4; uint8, or float in [0, 1]; any real values with
    ``normalize=True``, which maps their min..max to 0..255). It is converted to uint8 on
    creation and stored as a PNG. A list of Images under one key stores several images at
    one step.
    """

    __slots__ = ("array", "caption")

    def __init__(self, data: Any, caption: str | None = None, *, normalize: bool = False) -> None:
        if caption is not None and not isinstance(caption, str):
            raise InvalidValueError(f"caption={caption!r}: expected a string or None")
        if caption is not None:
            require_unicode(caption, f"caption={caption!r}", "a string that encodes as UTF-8")
        _check_flag("normalize", normalize)
        self.array = to_uint8_hwc(data, normalize=normalize)
        self.caption = caption

    def __repr__(self) -> str:
        return f"Image(shape={self.array.shape}, caption={self.caption!r})"


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 HxW or HxWxC array encoded as PNG."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """A PNG as a uint8 HxW or HxWxC array."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidValueError(f"{name}={value!r}: expected True or False")


def image_grid(
    batch: Any,
    columns: int | None = None,
    padding: int = 2,
    *,
    normalize: bool = False,
    scale_each: bool = False,
) -> np.ndarray:
    """Tile a batch of images (NxHxW, NxHxWxC or NxCxHxW) into one uint8 grid image.

    Args:
        batch: The images, as one array or tensor; pixels as :class:`Image` takes them (a
            torch batch whose second dimension is 1, 3 or 4 is NxCxHxW).
        columns: Images per row; about the square root of N by default.
        padding: Black pixels between and around the cells.
        normalize: Map the batch's min..max to 0..255 (as torchvision's ``make_grid``), for
            normalised or otherwise unbounded pixels.
        scale_each: With ``normalize``, map each image's own min..max instead.
    """
    _check_flag("normalize", normalize)
    _check_flag("scale_each", scale_each)
    torch_like = (type(batch).__module__ or "").startswith("torch")
    images = _to_numpy(batch, "image_grid")
    if images.ndim not in (3, 4) or not len(images):
        raise InvalidValueError(
            f"image_grid: shape {images.shape} is not a batch of images; expected NxHxW, "
            "NxHxWxC or NxCxHxW with N >= 1"
        )
    channels_first = images.ndim == 4 and images.shape[1] in (1, 3, 4)
    if channels_first and (torch_like or images.shape[-1] not in (1, 3, 4)):
        images = np.moveaxis(images, 1, -1)  # as to_uint8_hwc reads one image
    if normalize and not scale_each and images.dtype.kind in "fiu":
        images = _normalized(images, "image_grid")
    each = normalize and scale_each
    tiles = [to_uint8_hwc(image, f"image_grid item {i}", each) for i, image in enumerate(images)]
    if len({t.shape for t in tiles}) != 1:
        raise InvalidValueError("image_grid: images have different shapes")
    count = len(tiles)
    cols = columns or int(np.ceil(np.sqrt(count)))
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise InvalidValueError(f"image_grid: columns={columns!r}: expected an integer >= 1")
    rows = int(np.ceil(count / cols))
    height, width = tiles[0].shape[:2]
    channels = tiles[0].shape[2:]
    grid = np.zeros(
        (rows * height + (rows + 1) * padding, cols * width + (cols + 1) * padding, *channels),
        np.uint8,
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[top : top + height, left : left + width] = tile
    return grid

"""Images: every input layout stored as PNG and read back as uint8 arrays in step order."""

from __future__ import annotations

import numpy as np
import pytest

import stepstore as ss


def test_image_layouts_round_trip(new_run, store_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    floats = rng.random((3, 5, 7))  # CHW in [0, 1]
    run = new_run()
    run.log({"gray": ss.Image(gray, caption="g")}, step=0)
    run.log({"gray": ss.Image(gray[None])}, step=1)  # 1xHxW
    run.log({"rgb": ss.Image(rgb)}, step=0)
    run.log({"rgb": ss.Image(np.moveaxis(rgb, -1, 0))}, step=5)  # CHW
    run.log({"rgba": ss.Image(rgba)}, step=0)
    run.log({"float": ss.Image(floats)}, step=0)
    run.log({"grid": [ss.Image(gray, caption="a"), ss.Image(gray.T, caption="b")]}, step=2)
    run.finish()
    view = ss.open(store_path).run(run.id)
    gray_images = view.images("gray")
    assert [(i.step, i.caption) for i in gray_images] == [(0, "g"), (1, None)]
    assert all(np.array_equal(i.array, gray) for i in gray_images)
    assert [i.step for i in view.images("rgb")] == [0, 5]
    assert all(np.array_equal(i.array, rgb) for i in view.images("rgb"))
    assert np.array_equal(view.images("rgba")[0].array, rgba)
    expected = np.round(np.moveaxis(floats, 0, -1) * 255).astype(np.uint8)
    assert np.array_equal(view.images("float")[0].array, expected)
    both = view.images("grid")
    assert [(i.step, i.caption) for i in both] == [(2, "a"), (2, "b")]
    assert np.array_equal(both[1].array, gray.T)


def test_pil_and_torch_inputs(new_run, store_path):
    pil = pytest.importorskip("PIL.Image")
    torch = pytest.importorskip("torch")
    picture = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    run = new_run()
    run.log({"pil": ss.Image(pil.fromarray(picture)), "torch": ss.Image(torch.rand(3, 4, 4))})
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert np.array_equal(view.images("pil")[0].array, picture)
    assert view.images("torch")[0].array.shape == (4, 4, 3)


def test_image_grid_tiles_a_batch():
    batch = np.stack([np.full((2, 3), i, np.uint8) for i in range(5)])
    grid = ss.image_grid(batch, padding=1)
    assert grid.shape == (2 * 2 + 3, 3 * 3 + 4)  # 2 rows x 3 columns with 1-px borders
    assert grid[1, 1] == 0 and grid[1, 5] == 1 and grid[4, 1] == 3 and grid[4, 9] == 0
    rgb = ss.image_grid(np.zeros((4, 3, 8, 8)), columns=4)
    assert rgb.shape == (12, 42, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ss.Image(np.zeros((2, 2, 2))), r"shape \(2, 2, 2\) is not an image"),
        (
            lambda: ss.Image(np.full((2, 2), 1.5)),
            r"^image: float pixels must be finite and in \[0, 1\] \(got min 1.5, max 1.5\); "
            r"pass "
            r"normalize=True to map the pixels' min..max to 0..255, or scale them to 0..1 "
            r"\(floats\) or 0..255 \(integers\)$",
        ),
        (
            lambda: ss.Image(np.full((2, 2), np.nan)),
            r"float pixels must be finite and in \[0, 1\] \(got NaN pixels\); replace them",
        ),
        (
            lambda: ss.Image(np.full((2, 2), 300)),
            r"integer pixels must be in \[0, 255\] \(got min 300, max 300\); pass normalize=True",
        ),
        (
            lambda: ss.image_grid(np.full((2, 3, 3), -0.5)),
            r"image_grid item 0: float pixels must be finite and in \[0, 1\].*normalize=True",
        ),
        (
            lambda: ss.image_grid(np.array([[[0.0, np.inf]]]), normalize=True),
            r"image_grid: cannot normalize inf pixels; replace them first",
        ),
        (lambda: ss.Image(np.zeros((2, 2)), normalize=1), r"normalize=1: expected True or False"),
        (lambda: ss.image_grid(np.zeros((1, 2, 2)), scale_each="yes"), r"scale_each='yes'"),
        (lambda: ss.Image("no-such-file.png"), r"image: no file 'no-such-file.png'; expected"),
        (lambda: ss.Image(np.zeros((2, 2)), caption=3), r"caption=3: expected a string"),
        (lambda: ss.image_grid(np.zeros(3)), r"image_grid: shape \(3,\) is not a batch"),
    ],
)
def test_bad_images_are_explained(make, message):
    with pytest.raises(ss.InvalidValueError, match=message):
        make()


def test_image_key_rejects_other_values(new_run):
    run = new_run()
    run.log({"img": ss.Image(np.zeros((2, 2)))})
    with pytest.raises(ss.KindMismatchError, match=r"key 'img' holds images; got ndarray"):
        run.log({"img": np.zeros((2, 2))})


def test_image_files_are_read_by_path(tmp_path):
    from PIL import Image as PILImage

    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    PILImage.fromarray(rgb).save(tmp_path / "sample.png")
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    PILImage.fromarray(gray).save(tmp_path / "gray.jpg", quality=100)
    palette = PILImage.fromarray(rgb).convert("P")
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(ss.Image(str(tmp_path / "sample.png")).array, rgb)
    assert np.array_equal(ss.Image(tmp_path / "sample.png").array, rgb)  # a pathlib.Path
    assert ss.Image(tmp_path / "gray.jpg").array.shape == (2, 3)
    expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(ss.Image(tmp_path / "palette.png").array, expected)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ss.InvalidValueError, match=r"image: cannot read '.*notes.txt' as an "):
        ss.Image(tmp_path / "notes.txt")


def test_normalize_maps_min_max_to_0_255():
    pixels = np.array([[-1.0, 0.0], [1.0, 3.0]])
    assert ss.Image(pixels, normalize=True).array.tolist() == [[0, 64], [128, 255]]
    assert ss.Image(np.full((2, 2), 7.0), normalize=True).array.tolist() == [[0, 0], [0, 0]]
    wide = np.array([[0, 1000]], dtype=np.int64)
    assert ss.Image(wide, normalize=True).array.tolist() == [[0, 255]]
    inside = np.array([[0.2, 0.6]])  # already in [0, 1]: normalize still stretches it
    assert ss.Image(inside, normalize=True).array.tolist() == [[0, 255]]
    assert ss.Image(inside).array.tolist() == [[51, 153]]


def test_image_grid_normalizes_the_batch_or_each_image():
    batch = np.array([[[0.0, 1.0]], [[2.0, 4.0]]])  # two 1x2 images, batch range 0..4
    together = ss.image_grid(batch, columns=2, padding=0, normalize=True)
    assert together.tolist() == [[0, 64, 128, 255]]
    each = ss.image_grid(batch, columns=2, padding=0, normalize=True, scale_each=True)
    assert each.tolist() == [[0, 255, 0, 255]]
    torch = pytest.importorskip("torch")
    normalised = (torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) - 40) / 9
    grid = ss.image_grid(normalised, normalize=True)  # NxCxHxW, values about -4.4..6.2
    assert grid.shape == (4 + 2 * 2, 2 * 4 + 3 * 2, 3) and grid.dtype == np.uint8
    assert grid[2, 2].tolist() == [0, 43, 86]  # channels 16 values apart: 255 * 16 / 95
    assert grid[5, 11].tolist() == [169, 212, 255]  # the last pixel of the second image

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
        (lambda: ss.Image(np.full((2, 2), 1.5)), r"float pixels must be finite and in \[0, 1\]"),
        (lambda: ss.Image(np.full((2, 2), 300)), r"integer pixels must be in \[0, 255\]"),
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

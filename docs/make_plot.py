"""Draw docs/plot.png, the README's picture, from a small store recorded here.

Three runs of a learning-rate sweep with synthetic, seeded losses (one with a loss spike) and
per-epoch validation accuracy, recorded into a temporary store, then drawn by the same code
as ``stepstore plot RUN... --key loss --key val/acc --smooth 20 -o docs/plot.png``.
Run: ``.venv/bin/python docs/make_plot.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import stepstore as ss
from stepstore import plot

STEPS_PER_EPOCH = 500
EPOCHS = 6
OUT = Path(__file__).with_name("plot.png")


def record(store: Path) -> list[str]:
    """Record the sweep; return the run names."""
    rng = np.random.default_rng(0)
    names = []
    for lr, spike in ((0.1, None), (0.03, 1234), (0.01, None)):
        name = f"lr={lr:g}"
        with ss.init("sweep", name=name, params={"lr": lr}, store=store) as run:
            steps = np.arange(STEPS_PER_EPOCH * EPOCHS)
            floor = 0.05 + 0.5 * abs(np.log10(lr / 0.03))
            loss = floor + 2.3 * np.exp(-steps * lr / 40) + rng.normal(0, 0.08, len(steps))
            if spike is not None:
                loss[spike] = 6.0
            for step, value in zip(steps, loss, strict=True):
                run.log({"loss": abs(float(value))}, step=int(step), epoch=int(step) // 500)
                if (step + 1) % STEPS_PER_EPOCH == 0:
                    epoch = int(step) // STEPS_PER_EPOCH
                    acc = 0.97 - 0.6 * floor - 0.5 * np.exp(-(epoch + 1) * lr * 12)
                    run.log({"val/acc": float(acc)}, step=int(step), epoch=epoch)
        names.append(name)
    return names


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "store"
        names = record(store_path)
        with ss.open(store_path) as store:
            views = [store.run(name) for name in names]
            fig, axes = plot.figure(2)
            for key, ax in zip(("loss", "val/acc"), axes, strict=True):
                plot.plot_scalars(views, key, ax=ax, smooth=20 if key == "loss" else None)
                ax.set_title(key, fontsize="medium")
            axes[0].set_xlabel("")
            plot.save(fig, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

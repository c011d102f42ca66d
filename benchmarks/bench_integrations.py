"""Framework integrations: what stepstore's Keras callback, Lightning logger and Hugging Face
callback add to a training loop that logs scalars at every batch, in one process run.

    python benchmarks/bench_integrations.py            # full run (about 6-8 minutes on 2 cores)
    python benchmarks/bench_integrations.py --quick    # fewer steps and repeats (about 1-2 minutes)

For each framework the same training (same data, model, seed) runs without and with the
integration, interleaved within each repeat (the order alternates), and the wall time of the
whole ``fit``/``train`` call is compared, run start and finish included. The overhead is the
median over repeats of the paired ratio with/without; the target is at most 2 %. A second,
far less noisy figure times the integration's per-batch hook alone (called in a loop with the
values the framework passes) against the median time of a training step. Prints markdown and
writes ``benchmarks/results/integrations.md`` and ``integrations.json``
(``integrations.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    environment,
    load,
    median,
    num,
    pct,
    perf,
    quiet,
    spread,
    table,
    verdict,
    versions,
)

import stepstore as ss

RESULTS = Path(__file__).resolve().parent / "results"
cpu = time.process_time  # all threads of this process
TARGET = 0.02  # at most 2 % more wall time


@dataclass
class Settings:
    """Sizes and repeats; ``--quick`` shrinks them."""

    repeats: int = 9
    keras_epochs: int = 24  # 1,797 digits / batch 32 = 57 steps per epoch
    lightning_epochs: int = 24
    hf_steps: int = 600
    hook_calls: int = 20_000

    @classmethod
    def quick(cls) -> Settings:
        """About a quarter of the work."""
        return cls(repeats=3, keras_epochs=4, lightning_epochs=4, hf_steps=100, hook_calls=5_000)


def log_line(message: str) -> None:
    """Progress on stderr, with the load average of the shared machine."""
    print(f"[{perf():8.1f}s load {load()}] {message}", file=sys.stderr, flush=True)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled digits: 1,797 images of 8x8 pixels scaled to [0, 1], 10 classes."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)


Timing = tuple[float, float]  # (wall seconds, process CPU seconds) of one fit


def timed(fn: Callable[[], object]) -> Timing:
    """Wall and process CPU seconds (all threads: the writer's work counts) of ``fn()``."""
    w0, c0 = perf(), cpu()
    fn()
    return perf() - w0, cpu() - c0


def pairs(
    name: str, cfg: Settings, base: Callable[[], Timing], hooked: Callable[[], Timing]
) -> tuple[list[Timing], list[Timing]]:
    """Timings of ``base`` and ``hooked`` over the repeats, interleaved, order alternating."""
    base(), hooked()  # warm-up: imports, compilation, first allocations
    without: list[Timing] = []
    with_: list[Timing] = []
    for rep in range(cfg.repeats):
        order = [(without, base), (with_, hooked)]
        for times, fn in order if rep % 2 == 0 else reversed(order):
            quiet()
            times.append(fn())
        log_line(
            f"{name} repeat {rep + 1}/{cfg.repeats}: wall {without[-1][0]:.3f} s / "
            f"{with_[-1][0]:.3f} s, CPU {without[-1][1]:.3f} s / {with_[-1][1]:.3f} s"
        )
    return without, with_


def hook_cost(call: Callable[[int], None], calls: int) -> float:
    """Microseconds per call of a per-batch hook, its step going up by one each call."""
    quiet()
    t0 = perf()
    for step in range(1, calls + 1):
        call(step)
    return (perf() - t0) / calls * 1e6


def run_cost(tmp: Path, repeats: int) -> float:
    """Median seconds to start and finish an empty run: what each fit pays once."""
    times = []
    for _ in range(repeats + 1):
        quiet()
        t0 = perf()
        ss.init("bench-run", store=tmp / "runs").finish()
        times.append(perf() - t0)
    return median(times[1:])  # the first opens the store


# -- Keras ---------------------------------------------------------------------------------


def bench_keras(cfg: Settings, tmp: Path) -> dict[str, Any]:
    import keras

    x, y = digits()

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        net = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        net.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return net

    def fit(callbacks: list[Any]) -> Timing:
        net = model()
        return timed(
            lambda: net.fit(
                x, y, batch_size=32, epochs=cfg.keras_epochs, callbacks=callbacks, verbose=0
            )
        )

    def hooked() -> Timing:
        return fit([ss.keras.Callback(project="bench-keras", store=tmp / "keras")])

    without, with_ = pairs("keras", cfg, lambda: fit([]), hooked)
    steps = -(-len(x) // 32) * cfg.keras_epochs

    callback = ss.keras.Callback(project="bench-keras", store=tmp / "keras-hook")
    net = model()
    net.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)  # builds it
    callback.set_model(net)
    callback.set_params({"epochs": 1, "steps": 1, "verbose": 0})
    callback.on_train_begin()
    logs = {"accuracy": 0.5, "loss": 1.25}
    iterations = net.optimizer.iterations

    def call(step: int) -> None:
        iterations.assign_add(1)  # what the update does; timed alone below and taken off
        callback.on_train_batch_end(step, logs)

    hook = hook_cost(call, cfg.hook_calls)
    hook -= hook_cost(lambda step: iterations.assign_add(1), cfg.hook_calls)
    callback.on_train_end()
    return {"steps": steps, "without": without, "with": with_, "hook_us": hook}


# -- Lightning -----------------------------------------------------------------------------


def bench_lightning(cfg: Settings, tmp: Path) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    x, y = (torch.from_numpy(a) for a in digits())

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(64, 256),
                torch.nn.ReLU(),
                torch.nn.Linear(256, 256),
                torch.nn.ReLU(),
                torch.nn.Linear(256, 10),
            )

        def training_step(self, batch: Any, index: int) -> Any:
            inputs, labels = batch
            logits = self.net(inputs)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            self.log("train/loss", loss)
            self.log("train/acc", (logits.argmax(1) == labels).float().mean())
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    def fit(logger: Any) -> Timing:
        torch.manual_seed(0)
        module = MLP()
        data = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True
        )
        trainer = pl.Trainer(
            max_epochs=cfg.lightning_epochs,
            logger=logger,
            log_every_n_steps=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            accelerator="cpu",
            default_root_dir=tmp / "lightning-root",
        )
        return timed(lambda: trainer.fit(module, data))

    class Discard(pl.loggers.Logger):
        """A logger that keeps nothing: Lightning's own per-batch logging work, no recording."""

        name, version = "discard", "0"

        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            pass

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    def hooked() -> Timing:
        return fit(ss.lightning.Logger(project="bench-lightning", store=tmp / "lightning"))

    without, with_ = pairs("lightning", cfg, lambda: fit(Discard()), hooked)
    steps = -(-len(x) // 32) * cfg.lightning_epochs

    logger = ss.lightning.Logger(project="bench-lightning", store=tmp / "lightning-hook")
    logger.log_hyperparams({})
    metrics = {"train/loss": 1.25, "train/acc": 0.5, "epoch": 0.0}  # as Lightning passes them
    hook = hook_cost(lambda step: logger.log_metrics(metrics, step), cfg.hook_calls)
    logger.finalize("success")
    return {"steps": steps, "without": without, "with": with_, "hook_us": hook}


# -- Hugging Face --------------------------------------------------------------------------


def bench_hf(cfg: Settings, tmp: Path) -> dict[str, Any]:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    samples, batch = cfg.hf_steps * 8, 8
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (samples, 16), generator=generator)
    labels = torch.randint(0, 2, (samples,), generator=generator)
    dataset = [{"input_ids": i, "labels": label} for i, label in zip(ids, labels, strict=True)]

    def train(callbacks: list[Any]) -> Timing:
        torch.manual_seed(0)
        config = transformers.BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
            num_labels=2,
        )
        args = transformers.TrainingArguments(
            output_dir=str(tmp / "hf-out"),
            per_device_train_batch_size=batch,
            num_train_epochs=1,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = transformers.Trainer(
            model=transformers.BertForSequenceClassification(config),
            args=args,
            train_dataset=dataset,
            callbacks=callbacks,
        )
        trainer.remove_callback(transformers.PrinterCallback)  # prints every log line
        return timed(trainer.train)

    def hooked() -> Timing:
        return train([ss.hf.Callback(project="bench-hf", store=tmp / "hf")])

    without, with_ = pairs("hf", cfg, lambda: train([]), hooked)

    callback = ss.hf.Callback(project="bench-hf", store=tmp / "hf-hook")
    args = transformers.TrainingArguments(output_dir=str(tmp / "hf-hook-out"), report_to=[])
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    state.epoch = 0.5
    logs = {"loss": 0.69, "grad_norm": 0.4, "learning_rate": 5e-5, "epoch": 0.5}

    def call(step: int) -> None:
        state.global_step = step
        callback.on_log(args, state, control, logs=dict(logs))

    hook = hook_cost(call, cfg.hook_calls)
    callback.finish()
    return {"steps": cfg.hf_steps, "without": without, "with": with_, "hook_us": hook}


# -- report --------------------------------------------------------------------------------

FRAMEWORKS = {
    "keras": ("Keras 3 (torch backend) `ss.keras.Callback`", "MLP 64→256→256→10 on digits"),
    "lightning": ("Lightning `ss.lightning.Logger`", "MLP 64→256→256→10 on digits"),
    "hf": ("Hugging Face `ss.hf.Callback`", "BERT 2×32 on random tokens, batch 8"),
}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Medians, paired overhead and the hook's share of a step."""
    summary: dict[str, Any] = {}
    for index, kind in enumerate(("wall", "cpu")):
        without = [t[index] for t in result["without"]]
        with_ = [t[index] for t in result["with"]]
        paired = [w / b - 1 for b, w in zip(without, with_, strict=True)]
        summary[kind] = {
            "without_s": median(without),
            "with_s": median(with_),
            "overhead": median(paired),
            "overhead_range": spread(paired),
        }
    step_us = summary["wall"]["without_s"] / result["steps"] * 1e6
    added = result["hook_us"] * result["steps"] / 1e6 + result["run_s"]
    summary.update(
        step_us=step_us,
        hook_share=result["hook_us"] / step_us,
        expected=added / summary["wall"]["without_s"],
    )
    return summary


def report(cfg: Settings, res: dict[str, Any], quick: bool) -> str:
    env = res["env"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    lines = [
        "# stepstore integration benchmark" + (" (quick)" if quick else ""),
        "",
        f"Python {env['python']}, {env['cpus']} CPUs, {env['platform']}. {packages}. Load "
        f"average at start {env['loadavg_start'][0]:.2f}, at end {res['loadavg_end'][0]:.2f}; "
        f"total {res['total_s']:.0f} s. torch uses 1 thread. The machine is shared and noisy: "
        "the wall-time overhead is the median of paired ratios (with / without, same repeat); "
        "process CPU time (all threads, the writer's included) is less disturbed by other "
        "processes, and the hook's share of a step is the steadiest figure.",
        "",
        "Every batch logs its scalars (loss and a metric; Hugging Face: loss, grad_norm, "
        "learning_rate) through the framework's own logging, with and without stepstore's "
        "integration (Keras: no callback; Lightning: a logger that discards what it gets, so "
        "Lightning's own logging work is in both; Hugging Face: no callback, printing off); "
        f"{cfg.repeats} repeats, interleaved. Target: at most {TARGET:.0%} more wall time.",
        "",
    ]
    rows = []
    for name, (label, workload) in FRAMEWORKS.items():
        if name not in res:
            continue
        s = res[name]["summary"]
        cells = []
        for kind in ("wall", "cpu"):
            low, high = s[kind]["overhead_range"]
            cells += [
                f"{num(s[kind]['without_s'], 3)} / {num(s[kind]['with_s'], 3)} s",
                f"{pct(100 * s[kind]['overhead'])} [{pct(100 * low)} … {pct(100 * high)}]",
            ]
        rows.append(
            [
                label,
                workload,
                f"{res[name]['steps']:,}",
                *cells,
                num(s["step_us"], 0),
                num(res[name]["hook_us"], 1),
                pct(100 * s["hook_share"]),
                f"{num(1e3 * res[name]['run_s'], 1)} ms",
                pct(100 * s["expected"]),
                verdict(s["wall"]["overhead"] <= TARGET),
                verdict(s["expected"] <= TARGET),
            ]
        )
    lines.append(
        table(
            [
                "integration",
                "workload",
                "steps per fit",
                "wall without / with (medians)",
                "wall overhead, paired median [min … max]",
                "CPU without / with (medians)",
                "CPU overhead, paired median [min … max]",
                "µs per step without",
                "hook µs per batch",
                "hook ÷ step",
                "run start + finish",
                "expected overhead",
                f"wall ≤ {TARGET:.0%}",
                f"expected ≤ {TARGET:.0%}",
            ],
            rows,
        )
    )
    lines += [
        "",
        "The hook is timed alone, called in a loop with the values the framework passes it "
        "(Keras `on_train_batch_end`, Lightning `log_metrics`, Hugging Face `on_log`); its "
        "share of a step is what it adds to the training thread. The wall overhead also "
        "holds starting and finishing the run and the writer thread's share of the CPU. "
        "The expected overhead adds up what the integration costs per fit, (hook × steps + "
        "run start and finish) ÷ the median fit without it; it leaves out the writer thread, "
        "which the CPU columns hold.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--repeats", type=int, help="repeats per framework (default 9)")
    parser.add_argument(
        "--only", default="keras,lightning,hf", help="comma-separated frameworks to run"
    )
    parser.add_argument("--tmp", help="directory for the stores (default: system temp)")
    parser.add_argument("--out", default=str(RESULTS), help="where to write integrations.md/.json")
    args = parser.parse_args()

    cfg = Settings.quick() if args.quick else Settings()
    if args.repeats:
        cfg.repeats = args.repeats
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(FRAMEWORKS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; expected {', '.join(FRAMEWORKS)}")
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # the frameworks' advice (workers, deprecations)
    started = perf()
    res: dict[str, Any] = {"env": environment(), "settings": asdict(cfg), "quick": args.quick}
    res["env"]["packages"].update(
        versions(["keras", "lightning", "transformers", "accelerate", "scikit-learn"])
    )
    tmp = Path(tempfile.mkdtemp(prefix="stepstore-bench-integrations-", dir=args.tmp))
    log_line(f"stores under {tmp}")
    benches = {"keras": bench_keras, "lightning": bench_lightning, "hf": bench_hf}
    try:
        for name in only:
            res[name] = benches[name](cfg, tmp)
            res[name]["run_s"] = run_cost(tmp, cfg.repeats)
            res[name]["summary"] = summarise(res[name])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["total_s"] = perf() - started
    res["loadavg_end"] = os.getloadavg()
    text = report(cfg, res, args.quick)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "integrations.quick" if args.quick else "integrations"
    if set(only) != set(FRAMEWORKS):
        stem += "." + "-".join(only)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    log_line(f"wrote {out / stem}.md and .json in {res['total_s']:.0f} s")


if __name__ == "__main__":
    main()

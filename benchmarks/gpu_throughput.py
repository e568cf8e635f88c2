"""Training images per second on one machine (issue 13): the project's `fit`, today and with the GPU
levers, against a plain training loop over the same Keras network and data.

    KERAS_BACKEND=torch python benchmarks/gpu_throughput.py            # Kermany at 224 px, on a GPU
    python benchmarks/gpu_throughput.py --data synthetic --size 32 --images 64 --epochs 1   # smoke run

Network: the issue's table network, built by pneumo_models.model.build_model: --size px, 5 residual
blocks from 16 filters (16, 32, 64, 128, 256), batch norm, augmentation on (rotation, zoom, shift,
contrast); --set NAME=VALUE changes it. Data: the training split of --data (default
../shared/data/chest_xray), decoded once into the cache before any row is timed; --images caps it.

Rows (each trains --epochs epochs from the same seed, in this process, one after another):
  fit, today         pneumo_models.training.fit as a default run trains: float32, batch --batch,
                     jit_compile auto (Keras' choice), uint8 pixels in, validation once per epoch
  fit, fast          the same fit with TrainOptions(--precision, --batch-scale, --jit-compile): what
                     `run --precision P --batch-scale K --jit-compile J` trains a trial with
  loop, float32      the reference: a plain loop over the same network with the training images
                     resident on the device as uint8, float32, batch --batch. Under PyTorch a plain
                     PyTorch loop (torch.optim.Adam over the Keras variables, autograd); under
                     TensorFlow or JAX `model.train_on_batch` on device tensors
  loop, fast         the same loop in --precision (PyTorch: autocast to bfloat16 / float16 with a
                     GradScaler; others: the Keras dtype policy) at batch --batch x --batch-scale
  --levers adds one row per lever alone: fit with only the batch scale, only the precision, only
  jit_compile on.
"jit" is the requested mode and, after the colon, whether Keras did compile (it refuses XLA for a
network whose layers do not all support it, as the geometric augmentation layers do).
images/s = training images / seconds of one epoch's training steps (the fit rows' per-epoch
validation pass is timed apart and left out; "with val" puts it back), the median over the epochs
after the first (the first also traces / compiles: its seconds are shown apart). Ratios: "x today"
against "fit, today"; "of loop" against "loop, fast" (the issue's goal: fit, fast >= 0.7 of it and
>= 10x today).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

NAME = "gpu_throughput"
NETWORK = {"conv_blocks": 5, "base_filters": 16, "filter_growth": 2.0, "max_filters": 256, "block": "residual",
           "batch_norm": True, "kernel_size": 3, "dense_units": 128, "dropout": 0.3, "head": "gap",
           "optimizer": "adam", "learning_rate": 1e-3, "class_weight": "none",
           "aug_rotation": 0.05, "aug_zoom": 0.1, "aug_shift": 0.1, "aug_contrast": 0.1}
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(common.SHARED / "chest_xray"),
                   help="a <root>/<split>/<CLASS>/ folder, an .npz, or 'synthetic' (default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="input side in px (default: %(default)s)")
    p.add_argument("--images", type=int, default=0, help="use at most this many training images; 0 = all")
    p.add_argument("--epochs", type=int, default=3, help="epochs per row (default: %(default)s)")
    p.add_argument("--batch", type=int, default=32, help="today's batch size (default: %(default)s)")
    p.add_argument("--batch-scale", type=int, default=8, help="K of the fast rows (default: %(default)s)")
    p.add_argument("--precision", default="mixed_bfloat16", choices=PRECISIONS,
                   help="dtype policy of the fast rows (default: %(default)s)")
    p.add_argument("--jit-compile", default="auto", choices=("auto", "on", "off"),
                   help="jit_compile of the fast rows (default: %(default)s)")
    p.add_argument("--levers", action="store_true", help="also one fit row per lever alone")
    p.add_argument("--no-reference", action="store_true", help="leave out the plain-loop rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change the network")
    p.add_argument("--cache-dir", help="decoded-image cache (default: $PNEUMO_SEARCH_CACHE or ~/.cache/pneumo-search)")
    p.add_argument("--out", default=str(common.DEFAULT_OUT / NAME), help="output folder (default: %(default)s)")
    p.add_argument("--json", help=f"raw numbers (default: <out>/{NAME}.json)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ devices
def accelerator() -> dict:
    """The device the backend trains on, and how to wait for it and read its peak memory."""
    import keras

    backend = keras.backend.backend()
    info = {"backend": backend, "device": "cpu", "name": None}
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            info.update(device="cuda", name=torch.cuda.get_device_name(0))
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            info.update(device="gpu", name=details.get("device_name", gpus[0].name))
    elif backend == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            info.update(device=dev.platform, name=getattr(dev, "device_kind", str(dev)))
    return info


def synchronize() -> None:
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import keras

    try:
        if keras.backend.backend() == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
    except Exception:  # noqa: BLE001 - memory figures are a bonus
        pass


def peak_memory_mib() -> float | None:
    import keras

    try:
        if keras.backend.backend() == "torch":
            import torch

            if torch.cuda.is_available():
                return round(torch.cuda.max_memory_allocated() / 2**20, 1)
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
    except Exception:  # noqa: BLE001
        pass
    return None


# ------------------------------------------------------------------------------------ rows
def _epoch_clock():
    import keras

    class EpochClock(keras.callbacks.Callback):
        """Seconds of each whole epoch (validation included); epoch hooks only, so Keras never
        waits for the device per step on its account."""

        async_safe = True

        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self._begin = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._begin = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._begin)

    return EpochClock()


def fit_row(params: dict, data, *, epochs: int, seed: int, options) -> dict:
    """The project's fit with ``options``; training seconds = epoch seconds - validation seconds."""
    from pneumo_models.training import fit

    clock = _epoch_clock()
    _, result = fit(params, data, max_epochs=epochs, patience=0, seed=seed, restore_best=False,
                    callbacks=[clock], options=options)
    val = [r.val_seconds for r in result.history]
    return {"epoch_s": clock.seconds, "val_s": val,
            "train_s": [max(e - v, 1e-9) for e, v in zip(clock.seconds, val)],
            "batch_size": int(options.effective(params)["batch_size"]), "precision": options.precision,
            "jit_compile": options.jit_compile, "jit_effective": jit_effective(params, options.jit_compile)}


def jit_effective(params: dict, mode: str) -> bool:
    """Whether Keras compiles this network's train step with ``mode`` here (it refuses XLA for
    networks with layers that do not support it: the geometric augmentation layers)."""
    import warnings

    from pneumo_models.model import build_model
    from pneumo_models.training import TrainOptions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(build_model(params, jit_compile=TrainOptions(jit_compile=mode).keras_jit_compile).jit_compile)


def torch_loop_row(params: dict, data, *, epochs: int, seed: int, batch: int, precision: str) -> dict:
    """A plain PyTorch loop over the Keras network: data on the device as uint8, torch.optim.Adam on
    the Keras variables, autocast for mixed precision (a GradScaler for float16)."""
    import keras
    import numpy as np
    import torch

    from pneumo_models.model import build_network

    keras.utils.set_random_seed(seed)
    model = build_network(params, seed=seed)  # float32 weights; autocast picks the compute dtype
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    weights = [v.value for v in model.trainable_variables]
    opt = torch.optim.Adam(weights, lr=float(params["learning_rate"]))
    amp = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(dev) if amp is torch.float16 else None
    x = torch.as_tensor(np.ascontiguousarray(np.asarray(data.x_train)[..., None])).to(dev)
    y = torch.as_tensor(np.asarray(data.y_train), dtype=torch.float32).to(dev)
    n = int(x.shape[0])
    gen = torch.Generator(device=dev).manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        synchronize()
        start = time.perf_counter()
        order = torch.randperm(n, device=dev, generator=gen)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            with torch.autocast(device_type=dev, dtype=amp or torch.float32, enabled=amp is not None):
                out = model(x[idx].float(), training=True)
            loss = torch.nn.functional.binary_cross_entropy(out.float().reshape(-1), y[idx])
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        synchronize()
        seconds.append(time.perf_counter() - start)
    if not np.isfinite(float(loss.detach().float().cpu())):
        raise RuntimeError("the reference loop diverged")
    return {"epoch_s": seconds, "val_s": None, "train_s": seconds, "batch_size": batch, "precision": precision,
            "jit_compile": "off", "jit_effective": False,
            "loop": "plain PyTorch (autocast)" if amp else "plain PyTorch"}


def keras_loop_row(params: dict, data, *, epochs: int, seed: int, batch: int, precision: str, jit: str) -> dict:
    """``model.train_on_batch`` over device-resident tensors (TensorFlow, JAX)."""
    import warnings

    import keras
    import numpy as np

    from pneumo_models.model import build_model
    from pneumo_models.training import TrainOptions, dtype_policy

    keras.utils.set_random_seed(seed)
    with dtype_policy(precision), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Model doesn't support jit_compile=True": jit_effective says it
        model = build_model(params, seed=seed, jit_compile=TrainOptions(jit_compile=jit).keras_jit_compile)
    x = keras.ops.convert_to_tensor(np.asarray(data.x_train)[..., None])  # uint8, on the device
    y = keras.ops.convert_to_tensor(np.asarray(data.y_train).astype("float32"))
    n = int(x.shape[0])
    rng = np.random.default_rng(seed)
    seconds, loss = [], float("nan")
    for _ in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(n)
        for i in range(0, n, batch):
            idx = keras.ops.convert_to_tensor(order[i:i + batch])
            loss = model.train_on_batch(keras.ops.take(x, idx, axis=0), keras.ops.take(y, idx, axis=0))
        seconds.append(time.perf_counter() - start)  # train_on_batch hands back the loss: synchronised
    if not np.isfinite(float(np.asarray(loss).reshape(-1)[0])):
        raise RuntimeError("the reference loop diverged")
    return {"epoch_s": seconds, "val_s": None, "train_s": seconds, "batch_size": batch, "precision": precision,
            "jit_compile": jit, "jit_effective": bool(model.jit_compile), "loop": "model.train_on_batch on device tensors"}


def steady(values: list[float]) -> float:
    """The median over the epochs after the first (the only one when there is one)."""
    return statistics.median(values[1:]) if len(values) > 1 else values[0]


def summarise(row: dict, n_train: int) -> dict:
    row["train_images"] = n_train
    row["first_epoch_s"] = round(row["epoch_s"][0], 3)
    row["images_per_s"] = n_train / steady(row["train_s"])
    row["images_per_s_with_val"] = n_train / steady(row["epoch_s"]) if row["val_s"] is not None else None
    return row


# ------------------------------------------------------------------------------------ main
def load(args, params: dict):
    from pneumo_models.data import load_dataset

    ds = load_dataset(args.data, args.size, seed=args.seed, cache_dir=args.cache_dir, progress=False)
    n = args.images or len(ds.y_train)
    n_val = min(len(ds.y_val), max(1, n // 4)) if args.images else len(ds.y_val)
    return SimpleNamespace(x_train=ds.x_train[:n], y_train=ds.y_train[:n], x_val=ds.x_val[:n_val],
                           y_val=ds.y_val[:n_val], source=ds.info.location, kind=ds.info.kind)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # rows report their own peak memory
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import keras

    from pneumo_models.training import TrainOptions
    from search.cli import parse_overrides

    params = {**NETWORK, **parse_overrides(args.set), "input_size": args.size, "batch_size": args.batch}
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out / f"{NAME}.json"
    facts = common.machine()
    device = accelerator()
    data = load(args, params)
    n = len(data.y_train)
    print(f"gpu throughput: {keras.backend.backend()} on {device['name'] or 'CPU'}; {data.source} at {args.size} px, "
          f"{n} training and {len(data.y_val)} validation images, {args.epochs} epochs per row", flush=True)

    K, P, J = args.batch_scale, args.precision, args.jit_compile
    plan = [("fit, today", lambda: fit_row(params, data, epochs=args.epochs, seed=args.seed, options=TrainOptions())),
            ("fit, fast", lambda: fit_row(params, data, epochs=args.epochs, seed=args.seed,
                                          options=TrainOptions(precision=P, batch_scale=K, jit_compile=J)))]
    if args.levers:
        plan += [(f"fit, batch x{K} only", lambda: fit_row(params, data, epochs=args.epochs, seed=args.seed,
                                                           options=TrainOptions(batch_scale=K))),
                 (f"fit, {P} only", lambda: fit_row(params, data, epochs=args.epochs, seed=args.seed,
                                                    options=TrainOptions(precision=P))),
                 ("fit, jit on only", lambda: fit_row(params, data, epochs=args.epochs, seed=args.seed,
                                                      options=TrainOptions(jit_compile="on")))]
    if not args.no_reference:
        fast_params = TrainOptions(batch_scale=K).effective(params)
        if keras.backend.backend() == "torch":
            plan += [("loop, float32", lambda: torch_loop_row(params, data, epochs=args.epochs, seed=args.seed,
                                                              batch=args.batch, precision="float32")),
                     ("loop, fast", lambda: torch_loop_row(fast_params, data, epochs=args.epochs, seed=args.seed,
                                                           batch=args.batch * K, precision=P))]
        else:
            plan += [("loop, float32", lambda: keras_loop_row(params, data, epochs=args.epochs, seed=args.seed,
                                                              batch=args.batch, precision="float32", jit="auto")),
                     ("loop, fast", lambda: keras_loop_row(fast_params, data, epochs=args.epochs, seed=args.seed,
                                                           batch=args.batch * K, precision=P, jit=J))]
    from search.runtime import clear_backend_session

    rows: dict[str, dict] = {}
    for name, run in plan:
        print(f"  {name} ...", flush=True)
        clear_backend_session()
        reset_peak_memory()
        try:
            row = summarise(run(), n)
        except Exception as exc:  # noqa: BLE001 - one row's failure (out of memory, a refused dtype) is a result
            row = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
        row["peak_memory_mib"] = peak_memory_mib()
        rows[name] = row

    def ratio(a: str, b: str):
        ra, rb = rows.get(a, {}), rows.get(b, {})
        if ra.get("images_per_s") and rb.get("images_per_s"):
            return ra["images_per_s"] / rb["images_per_s"]
        return None

    for name, row in rows.items():
        row["x_today"] = ratio(name, "fit, today")
        row["of_loop_fast"] = ratio(name, "loop, fast")
    summary = {"fast_vs_today": ratio("fit, fast", "fit, today"), "fast_vs_loop": ratio("fit, fast", "loop, fast"),
               "today_vs_loop_float32": ratio("fit, today", "loop, float32")}
    summary["target_10x_today_met"] = None if summary["fast_vs_today"] is None else summary["fast_vs_today"] >= 10
    summary["target_0.7_of_loop_met"] = None if summary["fast_vs_loop"] is None else summary["fast_vs_loop"] >= 0.7
    payload = {"benchmark": NAME, "machine": facts, "accelerator": device, "network": params,
               "data": {"source": data.source, "kind": data.kind, "size": args.size, "train_images": n,
                        "val_images": len(data.y_val)},
               "settings": {"epochs": args.epochs, "batch": args.batch, "batch_scale": K, "precision": P,
                            "jit_compile": J, "seed": args.seed},
               "rows": rows, "summary": summary}
    common.write_json(json_path, payload)

    def f(v, digits=0):
        return "-" if v is None else f"{v:,.{digits}f}"

    table = common.table(
        ["row", "batch", "precision", "jit", "first epoch s", "images/s", "with val", "x today", "of loop",
         "peak MiB"],
        [[name, r.get("batch_size"), r.get("precision"),
          f"{r.get('jit_compile')}: {'on' if r.get('jit_effective') else 'off'}", f(r.get("first_epoch_s"), 1),
          f(r.get("images_per_s")), f(r.get("images_per_s_with_val")), f(r.get("x_today"), 2),
          f(r.get("of_loop_fast"), 2), f(r.get("peak_memory_mib"))] if "error" not in r else
         [name, "-", "-", "-", "-", r["error"][:60], "-", "-", "-", "-"] for name, r in rows.items()])
    print(f"\n{table}\n\nwritten to {json_path}", flush=True)
    return payload


if __name__ == "__main__":
    main()

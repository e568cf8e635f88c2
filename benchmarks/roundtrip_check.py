"""Load an exported model two ways (pneumo_models.load_model, keras safe mode) and check that both
reproduce the validation probabilities saved at export: ``python benchmarks/roundtrip_check.py DIR``.

Prints one JSON line (backend, device, largest difference) and exits non-zero on a mismatch.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402

from pneumo_models import load_model  # noqa: E402
from pneumo_models.data import load_dataset  # noqa: E402
from pneumo_models.training import predict_proba  # noqa: E402


def main(folder: str) -> int:
    folder = Path(folder)
    m = load_model(folder)  # card and checksum verified, safe mode on
    plain = keras.saving.load_model(folder / m.card["model_file"], safe_mode=True, compile=False)
    rows = list(csv.DictReader(open(folder / "validation_predictions.csv")))[:64]
    ds = load_dataset(m.card["data"]["source"], m.input_size, val_fraction=m.card["data"]["val_fraction"],
                      seed=m.card["data"]["split_seed"], progress=False, framing=m.framing)
    index = {i: k for k, i in enumerate(ds.ids_val)}
    x = np.stack([np.asarray(ds.x_val[index[r["id"]]]) for r in rows])
    saved = np.array([float(r["probability"]) for r in rows])
    ours = predict_proba(m.keras_model, x)  # x is already the model's input (framed and resized)
    theirs = np.asarray(plain.predict(x[..., None].astype("float32"), verbose=0)).reshape(-1)
    diff = float(max(np.abs(ours - saved).max(), np.abs(theirs - saved).max()))
    device = "cpu"
    if keras.backend.backend() == "torch":
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(json.dumps({"backend": keras.backend.backend(), "device": device, "n": len(rows),
                      "max_abs_diff": diff, "threshold": m.threshold}))
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""One photo through EfficientNet-Lite0 in ONNX Runtime: the float graph beside an int8 one, and what int8 costs.

    .venv/bin/python benchmarks/bench_int8.py [--photos ../shared/data/street_world/images] [--runs 40]

The answer path's warm time is the backbone (``docs/benchmarks.md``). EfficientNet-Lite was designed to quantise
(ReLU6, no squeeze-excitation), so the obvious way to halve it is an int8 graph. This script exports the default
answer-path graph (300×600 Street View frame, photo and mirror averaged, uint8 NHWC in, pooled features out),
quantises it statically (ONNX Runtime's QDQ format, per-channel int8 weights, uint8 activations calibrated on
``--calibrate`` photos), and prints, side by side in one run:

* the milliseconds of one photo through each graph, runs **alternating** between the two sessions (both with the
  answer path's settings: every core, no spinning), median of ``--runs``;
* how far the int8 features are from the float ones on ``--test`` other photos (cosine, per photo), which is what
  a model trained on float features would be fed.

Photos are drawn from ``--photos`` (any folder of JPEGs; ``street_world`` by default) with a fixed seed.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from worldnet.features.engine import build_engine
from worldnet.features.names import View
from worldnet.features.onnx_graph import OnnxBackbone, onnx_session
from worldnet.features.preprocess import to_array

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "street_world" / "images"


def _quantise(graph: bytes, calibration: list[np.ndarray], work: Path) -> bytes:
    """The float graph statically quantised to int8 (QDQ), activations calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, pre, out = work / "float.onnx", work / "pre.onnx", work / "int8.onnx"
    src.write_bytes(graph)
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser warns once per integer tensor it leaves alone
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"images": x[None]}

    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return out.read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="a folder of JPEGs (searched recursively)")
    ap.add_argument("--calibrate", type=int, default=48, help="photos that calibrate the int8 activations")
    ap.add_argument("--test", type=int, default=64, help="other photos whose features are compared")
    ap.add_argument("--runs", type=int, default=40, help="timed single-photo runs per graph (alternating)")
    ap.add_argument("--frame", default="600x300", help="the shard frame, WIDTHxHEIGHT (Street View's 2:1 by default)")
    args = ap.parse_args()
    if not args.photos.is_dir():
        raise SystemExit(f"--photos {args.photos} is not a folder; give a folder of JPEGs")
    files = sorted(args.photos.rglob("*.jpg"))
    if len(files) < args.calibrate + args.test:
        raise SystemExit(f"--photos {args.photos} holds {len(files)} JPEGs; --calibrate + --test need {args.calibrate + args.test}")
    random.Random(0).shuffle(files)
    w, h = (int(v) for v in args.frame.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        engine = build_engine("efficientnet_lite0", frame=(w, h), view=View(height=h, flip=True), engine="onnx", graphs_dir=work)
        if not isinstance(engine, OnnxBackbone):
            raise SystemExit("the ONNX export failed on this machine; nothing to compare")
        graph = Path(engine.path).read_bytes()

        def load(f: Path) -> np.ndarray:
            return to_array(Image.open(f).convert("RGB"), engine.spec)

        calibration = [load(f) for f in files[: args.calibrate]]
        test = np.stack([load(f) for f in files[args.calibrate : args.calibrate + args.test]])
        print(f"{engine.path.rsplit('/', 1)[-1]}: quantising on {len(calibration)} photos ...", flush=True)
        sessions = {"float": onnx_session(graph, spin=False), "int8": onnx_session(_quantise(graph, calibration, work), spin=False)}

        feats = {k: s.run(["features"], {"images": test})[0] for k, s in sessions.items()}
        a, b = feats["float"], feats["int8"]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

        times: dict[str, list[float]] = {k: [] for k in sessions}
        for i in range(args.runs + 3):  # the first three of each are warm-up
            x = test[i % len(test)][None]
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(["features"], {"images": x})
                if i >= 3:
                    times[k].append(time.perf_counter() - t)

    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"\none photo at {w}x{h} with its mirror, median of {args.runs} alternating runs")
    print("| graph | ms per photo | float / graph |")
    print("|---|---:|---:|")
    for k, v in ms.items():
        print(f"| {k} | {v:.1f} | {ms['float'] / v:.2f} |")
    print(f"\nint8 features against float on {len(test)} photos: cosine min {cos.min():.4f}, ", end="")
    print(f"median {np.median(cos):.4f}, mean {cos.mean():.4f}")


if __name__ == "__main__":
    main()

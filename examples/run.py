"""`make run`: compile the example models with einc, run them, check them.

For each model: compile for this CPU, run on a fixed random input, print the
outputs, their largest difference from onnxruntime's, and the median time per
inference of einc beside onnxruntime's (both measured here, in this run).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

import einc

HERE = Path(__file__).parent
RTOL, ATOL = 1e-4, 1e-5


def median_seconds(fn, repeats: int = 30, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check(path: Path) -> bool:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32)
        for i in session.get_inputs()
    }
    start = time.perf_counter()
    model = einc.compile(path)
    compile_s = time.perf_counter() - start
    ours = model.run(feeds)
    theirs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    ok = True
    print(f"== {path.name}: compiled in {compile_s:.2f} s")
    for name, value in ours.items():
        diff = float(np.max(np.abs(value - theirs[name])))
        close = np.allclose(value, theirs[name], rtol=RTOL, atol=ATOL)
        ok &= close
        print(f"{name} {list(value.shape)}: {np.array2string(value.ravel()[:6], precision=4)} ...")
        print(f"   max |einc - onnxruntime| = {diff:.2e} ({'ok' if close else 'MISMATCH'} at rtol {RTOL}, atol {ATOL})")
    t_einc = median_seconds(lambda: model.run(feeds))
    t_ort = median_seconds(lambda: session.run(None, feeds))
    print(f"   time per inference: einc {t_einc * 1e3:.3f} ms, onnxruntime {t_ort * 1e3:.3f} ms (median of 30)")
    return ok


def main() -> int:
    from make_models import main as make_models

    make_models(str(HERE))
    ok = all([check(HERE / name) for name in ("mlp.onnx", "attention.onnx")])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())

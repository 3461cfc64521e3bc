"""The `einc` command line: compile, run, opt.

Every error a user's input can cause ends in one `einc: error: ...` line and exit
status 1; tracebacks are for einc's own bugs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from einc.backends import TARGETS
from einc.diagnostics import EincError


def _parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        if any(d < 0 for d in shape):
            raise ValueError
    except ValueError:
        raise EincError(
            f"bad --input-shape '{text}': expected NAME=DxDx... such as x=1x3x224x224"
        ) from None
    return name, shape


def _input_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    if not items:
        return None
    return dict(_parse_shape(item) for item in items)


def _cmd_compile(args: argparse.Namespace) -> int:
    import einc

    model = einc.compile(args.model, target=args.target, input_shapes=_input_shapes(args.input_shape))
    out = args.output or "out"
    model.save(out)
    print(f"einc: compiled {args.model} for {args.target} into {out}/")
    if args.emit_source:
        if not hasattr(model, "emit_source"):
            raise EincError(f"--emit-source needs a target that emits source (triton), not {args.target}")
        path = model.emit_source(args.emit_source, os.path.splitext(os.path.basename(args.model))[0])
        print(f"einc: wrote the generated source to {path}")
    return 0


def _parse_feed(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise EincError(f"bad --input '{text}': expected NAME=FILE.npy")
    return name, path


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from einc.runtime import load

    model = load(args.artifact)
    outputs = model.run(_load_feeds(args.input))
    if args.output_dir:
        import os

        os.makedirs(args.output_dir, exist_ok=True)
        for name, value in outputs.items():
            np.save(os.path.join(args.output_dir, f"{_safe(name)}.npy"), value)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}{list(value.shape)}")
        print(np.array2string(value, threshold=20, edgeitems=3))
    return 0


def _load_feeds(items: Sequence[str] | None) -> dict:
    """The `--input NAME=FILE.npy` arrays, by input name."""
    import numpy as np

    feeds = {}
    for item in items or []:
        name, path = _parse_feed(item)
        try:
            feeds[name] = np.load(path)
        except (OSError, ValueError) as err:
            raise EincError(f"cannot read input '{name}' from {path}: {err}") from None
    return feeds


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _cmd_explain(args: argparse.Namespace) -> int:
    if args.memory:
        from einc.tools.explain_memory import explain_memory

        print(explain_memory(args.model, _input_shapes(args.input_shape), args.json, args.picture), end="")
        return 0
    from einc.tools.explain import explain

    print(explain(args.model, _input_shapes(args.input_shape), as_json=args.json), end="")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from einc.tools.bench import bench, render

    against = [] if args.against == "none" else [args.against]
    feeds = _load_feeds(args.input)
    shapes = {name: list(value.shape) for name, value in feeds.items()} | (_input_shapes(args.input_shape) or {})
    result = bench(args.model, shapes or None, feeds=feeds, against=against, runs=args.runs, cold=args.cold)
    print(render(args.model, result), end="")
    return 0


def _cmd_opt(argv: Sequence[str]) -> int:
    from xdsl.utils.exceptions import DiagnosticException, ParseError, PassFailedException, VerifyException

    from einc.tools.opt import EincOptMain

    try:
        EincOptMain(args=argv).run()
    except (ParseError, VerifyException, DiagnosticException, PassFailedException) as err:
        print(f"einc: error: {err}", file=sys.stderr)
        return 1
    except FileNotFoundError as err:
        print(f"einc: error: {err.filename}: no such file", file=sys.stderr)
        return 1
    except ValueError as err:  # xdsl-opt's input reader: a file it cannot parse by its extension
        if not str(err).startswith("Unrecognized file extension"):
            raise
        path = next((a for a in argv if not a.startswith("-") and os.path.isfile(a)), "input")
        print(f"einc: error: {path}: `einc opt` reads IR text (.mlir), not {os.path.splitext(path)[1] or 'this file'}; "
              "give an ONNX model to `einc compile` or `einc explain`", file=sys.stderr)
        return 1
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="einc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model into an artifact directory")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("-o", "--output", help="artifact directory (default: out/)")
    p.add_argument("--target", default="cpu", choices=TARGETS)
    p.add_argument("--emit-source", metavar="DIR", help="also write the generated source (triton) into DIR")
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=DxD...",
        help="concrete shape for an input with symbolic dims (repeatable)",
    )
    p.set_defaults(handler=_cmd_compile)

    p = sub.add_parser("run", help="run a compiled artifact on .npy inputs")
    p.add_argument("artifact", help="artifact directory from `einc compile`")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    p.add_argument("--output-dir", help="write each output as NAME.npy here")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("explain", help="show the einsum cascades of a model and the passes each needs")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--input-shape", action="append", metavar="NAME=DxD...", help="as for compile")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--memory", action="store_true", help="the arena plan: size, lower bound, planner, picture")
    p.add_argument("--picture", metavar="FILE.html", help="with --memory: where to write the plan (default MODEL.memory.html)")
    p.set_defaults(handler=_cmd_explain)

    p = sub.add_parser("bench", help="time a model with einc beside onnxruntime (latency, GFLOP/s, compile time)")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--against", default="onnxruntime", choices=["onnxruntime", "none"])
    p.add_argument("--input-shape", action="append", metavar="NAME=DxD...", help="as for compile")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="a value for an input (others are random)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per engine (default 100)")
    p.add_argument("--cold", action="store_true", help="fill the caches with other data before each timed run (weights from DRAM)")
    p.set_defaults(handler=_cmd_bench)

    sub.add_parser("opt", help="run passes over MLIR text (xdsl-opt with einc's dialects)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "opt":
            return _cmd_opt(argv[1:])
        args = _build_parser().parse_args(argv)
        return args.handler(args)
    except EincError as err:
        print(f"einc: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C (a long compile or bench): no traceback; 128 + SIGINT, as shells report
        print("einc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""lit configuration for einc's FileCheck tests: `einc opt` over .mlir files."""

import os

import lit.formats

config.name = "einc"  # noqa: F821
config.test_format = lit.formats.ShTest(preamble_commands=[])  # noqa: F821
config.suffixes = [".mlir"]  # noqa: F821
config.test_source_root = os.path.dirname(__file__)  # noqa: F821
config.excludes = ["lit.cfg.py", "Output"]  # noqa: F821
# The venv's bin (einc, filecheck) must be on PATH: `make test` runs lit from it.
config.environment["PATH"] = os.environ["PATH"]  # noqa: F821

"""Docs that are generated from the code stay in step with it."""

from pathlib import Path

from einc.tools.coverage import render

ROOT = Path(__file__).parents[2]


def test_onnx_coverage_doc_is_current():
    doc = (ROOT / "docs" / "onnx-coverage.md").read_text()
    assert doc == render(), "regenerate: python -m einc.tools.coverage > docs/onnx-coverage.md"


def test_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make run" in first_block and "make test" in first_block

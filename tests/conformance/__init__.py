"""ONNX backend node tests through einc's CPU target, with a list of expected failures.

`make conformance` (python -m tests.conformance) runs them all; `make test` runs a
fixed subset through test_node_subset.py. See harness.py.
"""

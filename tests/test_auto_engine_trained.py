"""--device auto on a network that has learned, and on random weights (slow tier; issue 27).

The trained lraspp of tests/test_trained_model.py (its fixtures, shared: trained once per machine) goes
through `segtool export`, which records each other engine's label agreement with ONNX Runtime's CPU:
where this CPU has bf16 natively, OpenVINO bf16 reaches the 99% target there and is among what auto
times (it takes it when it is the fastest). fcn_resnet50 with random weights has its own figure recorded;
a target above it refuses bf16 whatever the timing says.
"""

from __future__ import annotations

import json

import pytest
from test_trained_model import shapes_model, trained  # noqa: F401  # fixtures: the trained network, exported

from segtool.runtime import Segmenter
from segtool.runtime.model import choice as C
from segtool.runtime.model.engines import onnx_metadata
from segtool.runtime.model.metadata import PREFIX
from segtool.runtime.model.session import cpu_flags

pytestmark = [
    pytest.mark.openvino,
    pytest.mark.skipif(not C.native("bf16", set(cpu_flags())), reason="this CPU has no native bf16"),
]


def rows(path) -> dict[str, dict]:
    return {r["device"]: r for r in json.loads(onnx_metadata(path)[PREFIX + "agreements"])["rows"]}


def test_trained_network_bf16_is_recorded_above_target_and_auto_times_it(shapes_model):  # noqa: F811
    recorded = rows(shapes_model)
    assert recorded["openvino:CPU"]["agreement"] >= 0.999
    assert recorded["openvino:CPU:bf16"]["agreement"] >= 0.99
    seg = Segmenter(shapes_model, warn_random=False)
    assert seg.choice is not None and "openvino:CPU:bf16" in seg.choice.timings_ms
    print(seg.choice.line)  # what auto chose here, and why (-s shows it)
    if seg.choice.device == "openvino:CPU:bf16":
        assert seg.provider.startswith("OpenVINO CPU bf16") and seg.precision_check is not None
        assert seg.precision_check.agreement == recorded["openvino:CPU:bf16"]["agreement"]


def test_random_weights_bf16_is_taken_only_at_or_above_the_target(model_path):
    """fcn_resnet50 with random weights: its bf16 figure is recorded (99.93% here, on a Sapphire Rapids
    with AMX: it passes 99%); a target above the recorded figure refuses it, whatever the timing says."""
    from segtool.runtime.model.choice import Policy

    figure = rows(model_path)["openvino:CPU:bf16"]["agreement"]
    strict = Policy(min_agreement=min(1.0, figure + 0.0001))
    seg = Segmenter(model_path, warn_random=False, policy=strict)
    assert seg.choice is not None and seg.choice.device != "openvino:CPU:bf16"
    assert seg.choice.skipped["openvino:CPU:bf16"] == f"recorded at {figure:.2%} agreement, below {figure + 0.0001:.2%}"
    print(seg.choice.line)

"""CPU throughput tracked in CI (pytest-benchmark): the library's reference path beside
``torch.nn.LSTM`` (oneDNN), forward+backward at T = 256, B = 16, hidden 64.

The suite's CPU sizes; ``python -m bench --quick`` is the full CPU sweep. Each case is
first checked against its per-step loop, so a wrong model is never timed.
"""

import pytest
import torch

from bench.registry import REGISTRY
from bench.suite import relative_error

T, B, HIDDEN, INPUT = 256, 16, 64, 32

# timed alone by ci/test.sh: pytest-benchmark records nothing under pytest-xdist's workers
pytestmark = pytest.mark.throughput


@pytest.mark.parametrize("name", ["lstm", "scurnn", "scornn", "enrnn", "lstm_recurrence",
                                  "momentumlstm"])
def test_forward_backward_throughput(benchmark, name):
    case = REGISTRY[name]
    model = case.build(INPUT, HIDDEN)
    x = torch.randn(T, B, INPUT)
    with torch.no_grad():
        assert relative_error(model(x)[0], case.loop(model, x)) < 1e-5

    def step():
        model.zero_grad(set_to_none=True)
        model(x)[0].sum().backward()

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    # pytest-benchmark times nothing under --benchmark-disable or pytest-xdist (ci/gpu.sh
    # runs the suite with workers): the step ran once, there are no stats to record
    if not benchmark.disabled:
        benchmark.extra_info["tokens_per_s"] = T * B / benchmark.stats["median"]

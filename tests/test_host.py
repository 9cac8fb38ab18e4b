"""kernels/_host.py: how the split kernels are launched (the kernels themselves are tested
in test_recurrence.py and test_lstm_recurrence.py)."""

import pytest
import torch

from fastunitary.kernels import _host


@pytest.mark.parametrize("reverse", [False, True])
def test_whole_batch_blocks_run_all_steps_in_one_launch(reverse):
    """64 column groups on 132 SMs: two batch blocks per launch, every step in it."""
    last = 9 if reverse else 0
    assert _host.split_schedule(10, 5, 64, 132, reverse) == [
        (0, 2, last, 10), (2, 2, last, 10), (4, 1, last, 10)]
    # one group per block, one program at once (the interpreter): a launch per block
    assert _host.split_schedule(10, 3, 1, 1, reverse) == [
        (0, 1, last, 10), (1, 1, last, 10), (2, 1, last, 10)]


def test_a_block_too_wide_to_run_at_once_is_launched_step_by_step():
    """More column groups than programs that run at once: one launch per step (all batch
    blocks), in time order forward and in reverse for the backward, none waiting."""
    assert _host.split_schedule(3, 4, 200, 132, False) == [(0, 4, 0, 1), (0, 4, 1, 1),
                                                           (0, 4, 2, 1)]
    assert _host.split_schedule(3, 4, 2, 1, True) == [(0, 4, 2, 1), (0, 4, 1, 1),
                                                      (0, 4, 0, 1)]


def test_the_interpreter_runs_one_program_at_a_time_on_any_device(monkeypatch):
    """Under TRITON_INTERPRET=1 the grid's programs run one after the other, CUDA tensors
    included (copied to the host): a launch that counted on the GPU's SMs there would
    wait forever."""
    monkeypatch.setattr(_host, "sm_count", lambda index: 132)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _host.programs_at_once(torch.device("cuda", 0)) == 1
    assert _host.programs_at_once(torch.device("cpu")) == 1
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert _host.programs_at_once(torch.device("cuda", 0)) == 132

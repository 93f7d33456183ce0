"""Suite-wide settings and fixtures."""
import os

import pytest
import torch

# The tests compare against torch's numbers; backend="auto" would pick OpenVINO on the CPU when it is
# installed (and export/compile every tiny test model). Tests of the OpenVINO backend ask for it by name.
os.environ.setdefault("VSSTAR_BACKEND", "torch")


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny tensors run many times faster so on a busy machine, and
    OpenMP does not spin on the shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Suite-wide settings and fixtures."""
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from support import shared_path

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


@pytest.fixture(scope="session")
def shared() -> Callable[..., Path]:
    """``shared(rel, local=None)``: a file or folder of the shared read-only data (``../shared`` beside the
    checkout, or ``$VSSTAR_SHARED``), or ``local`` when the repository ships it; skips the test with a reason
    naming the file when neither exists. Helpers that run outside a fixture call support.shared_path."""
    return shared_path

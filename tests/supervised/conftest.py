import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """These models are tiny: one thread is faster and keeps runs deterministic."""
    torch.set_num_threads(1)

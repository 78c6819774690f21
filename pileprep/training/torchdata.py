"""The optional torch adapter: a schedule's training samples as a ``torch.utils.data.Dataset``.

Imported only by ``TrainingOrder.torch_dataset``, so pileprep itself never needs torch. Item i
is training sample ``start_step * batch_size + i``; with a sequential sampler and
``batch_size`` equal to the schedule's, a DataLoader yields exactly the GPT-NeoX batches.
"""

from __future__ import annotations

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as exc:  # a clear message instead of a bare ImportError deep in a trainer
    from pileprep.core.errors import ConfigError

    raise ConfigError("the torch adapter needs PyTorch: pip install torch") from exc


class TrainingSamples(Dataset):
    """Training samples ``[start_step*B, end_step*B)`` of a ``TrainingOrder``, as int64 tensors."""

    def __init__(self, order, start_step: int = 0, end_step: int | None = None):
        end = order.cfg.train_iters if end_step is None else end_step
        if not 0 <= start_step < end <= order.cfg.train_iters:
            raise IndexError(f"steps {start_step}:{end} are outside 0:{order.cfg.train_iters}")
        self.order = order
        self.first = start_step * order.cfg.batch_size
        self.count = (end - start_step) * order.cfg.batch_size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.count:
            raise IndexError(f"sample {i} is outside 0..{self.count - 1}")
        # int64, as GPT-NeoX's GPT2Dataset returns; uint16 has no torch dtype.
        return torch.from_numpy(self.order.sample(self.first + i).astype("int64"))

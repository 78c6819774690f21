"""The schedule job (``pileprep schedule``): GPT-NeoX's training-order index of a dataset for
other settings, with its GPT-NeoX config fragment, added to the output directory."""

from __future__ import annotations

from pathlib import Path

from pileprep.core.config import ScheduleConfig
from pileprep.core.errors import ConfigError
from pileprep.core.files import dataset_prefix
from pileprep.core.outdir import OutputDir
from pileprep.formats import neox
from pileprep.training.order import dataset_name, preshuffled
from pileprep.training.schedule_files import build_for_dataset


def add_schedule(out_dir: str | Path, cfg: ScheduleConfig, tokenizer: str,
                 quiet: bool = False) -> list[Path]:
    """The files written: the index (both namings) and the config fragment, whose tokenizer
    path is ``tokenizer``."""
    cfg.validate()
    if preshuffled(out_dir) is not None:
        raise ConfigError(f"{out_dir} is a preshuffled dataset: its items are the training "
                          "samples, in order; it has no schedule to build")
    with OutputDir(out_dir, "schedule", quiet) as out:
        prefix = dataset_prefix(out.path, dataset_name(out.path))
        names = list(build_for_dataset(out.path, prefix, cfg, quiet))
        names.append(neox.write(out.path, prefix, cfg, tokenizer))
    return [out.path / name for name in names]

"""The GPT-NeoX configuration fragment that makes GPT-NeoX train on exactly pileprep's schedule.

GPT-NeoX names its index files after the data path, the number of samples (derived from
``train-iters`` and the global batch ``train_batch_size``), ``seq-length``, ``seed``, and the
pack settings; merged into a model config, this fragment makes GPT-NeoX find pileprep's files
and load them instead of building its own. The global batch is what matters, not how it is
split: any ``train_micro_batch_size_per_gpu * gradient_accumulation_steps * data-parallel GPUs``
equal to ``train_batch_size`` reads the same samples in the same order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pileprep.core import atomic
from pileprep.core.config import ScheduleConfig


def file_name(cfg: ScheduleConfig) -> str:
    return (f"gpt_neox_{cfg.seq_length}sl_{cfg.batch_size}bs_{cfg.train_iters}it_"
            f"{cfg.seed}s.yml")


def splits(batch_size: int, gpus: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256)) -> list[tuple]:
    """``(gpus, micro_batch, grad_accum)`` choices giving the global batch, micro batch <= 32."""
    out = []
    for g in gpus:
        if batch_size % g:
            continue
        per_gpu = batch_size // g
        micro = max(m for m in range(1, min(per_gpu, 32) + 1) if per_gpu % m == 0)
        out.append((g, micro, per_gpu // micro))
    return out


def fragment(data_prefix: str | Path, cfg: ScheduleConfig, tokenizer: str) -> str:
    """The fragment as text: GPT-NeoX's YAML dialect (JSON with ``#`` comments)."""
    prefix = str(data_prefix)
    settings = {
        "train-data-paths": [prefix], "train-data-weights": [1.0],
        "valid-data-paths": [prefix], "test-data-paths": [prefix],
        "data-impl": "mmap", "pack-impl": "packed", "allow-chopped": True,
        "seq-length": cfg.seq_length, "train-iters": cfg.train_iters,
        "train_batch_size": cfg.batch_size, "seed": cfg.seed,
        "tokenizer-type": "HFTokenizer", "vocab-file": tokenizer,
    }
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in settings.items())
    choices = "\n".join(f"#   {g:>4} data-parallel GPUs: train_micro_batch_size_per_gpu {m}, "
                        f"gradient_accumulation_steps {a}" for g, m, a in splits(cfg.batch_size))
    return (f"# Written by pileprep: merge into a GPT-NeoX model config.\n"
            f"# GPT-NeoX then loads pileprep's training-order files for {Path(prefix).name}\n"
            f"# (seq-length {cfg.seq_length}, global batch {cfg.batch_size}, train-iters "
            f"{cfg.train_iters}, seed {cfg.seed}) instead of building its own.\n"
            f"# Only the global batch matters; split it so that micro batch x gradient\n"
            f"# accumulation x data-parallel GPUs = {cfg.batch_size}, for example:\n"
            f"{choices}\n"
            f"# valid/test paths point at the same data, as in Pythia's configs; GPT-NeoX builds\n"
            f"# their (separate) indices itself.\n"
            f"# GPT-NeoX versions: current GPT-NeoX loads the index named ..._{cfg.seed}s_packedpi_ac_*;\n"
            f"# GPT-NeoX v1.0 (Pythia's trainer) loads the same arrays under ..._{cfg.seed}s_*, which\n"
            f"# pileprep links beside them. v1.0 knows no pack-impl / allow-chopped: delete those two\n"
            f"# settings there (its only packing is the one pileprep reproduces).\n"
            f"{{\n{body}\n}}\n")


def write(out_dir: str | Path, data_prefix: str | Path, cfg: ScheduleConfig, tokenizer: str) -> str:
    """Write the fragment for one schedule into ``out_dir``; return its file name.

    It holds absolute paths, so it depends on where the build lives: it is written after the
    build's commit and is not among the manifest's outputs (which stay location-independent).
    """
    name = file_name(cfg)
    if os.path.exists(tokenizer):
        tokenizer = os.path.abspath(tokenizer)
    atomic.write_bytes(Path(out_dir) / name,
                       fragment(Path(data_prefix).resolve(), cfg, tokenizer).encode())
    return name

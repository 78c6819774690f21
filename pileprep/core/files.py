"""The names of everything pileprep writes, defined once.

Writers and readers both take names from here, so the read side (the API, training lookups,
verify) never imports the write side to learn where a file is.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"  # inputs, settings, outputs with sha256; moved in last
REPORT = "report.json"  # every input line accounted for
REJECTS = "rejects.jsonl"  # each rejected line with its reason
PROVENANCE = "provenance.parquet"  # one row per document: where it came from
DUPLICATES = "duplicates.parquet"  # with --dedup: every removed document
DEDUP_MARKDOWN = "dedup_report.md"  # the human-readable dedup report
DEDUP_SUMMARY = "dedup.json"  # `pileprep dedup`: the summary without a dataset
SCHEDULES = "schedules.json"  # which training-order indexes were built, newest last
ORDER_LINK = "order_link.json"  # a preshuffled dataset: the dataset and schedule it equals
ITEM_SOURCES = "item_sources.npy"  # a preshuffled dataset: its items' pieces, found by content
ITEM_SOURCES_OFFSETS = "item_sources_offsets.npy"  # the first row of each item in it
ITEM_SOURCES_NAMES = "item_sources.json"  # the source and subset names its rows number
MINHASH_DIR = "minhash"  # MinHash signatures, kept for other thresholds
WORK_DIR = ".pileprep-work"  # intermediate stage files (removed after a build)
STAGING = ".pileprep-staging"  # finished outputs before they are moved in
JOURNAL = "COMMIT.json"  # inside STAGING: the files being moved, for roll-forward
DOCUMENT_SUFFIX = "_text_document"  # GPT-NeoX's name for a dataset of whole documents


def dataset_prefix(out_dir: str | Path, name: str) -> Path:
    """``OUT_DIR/<name>_text_document``: the prefix of the ``.bin``/``.idx`` pair."""
    return Path(out_dir) / f"{name}{DOCUMENT_SUFFIX}"


def data_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.bin")


def index_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.idx")


PIECES_SUFFIX = ".bin.pieces.json"


def pieces_path(prefix: str | Path) -> Path:
    """Where the data of an adopted dataset published in pieces is listed (instead of a .bin)."""
    return Path(f"{prefix}{PIECES_SUFFIX}")


# GPT-NeoX's training-order index files: ``<prefix>_train_0_indexmap_<ns>ns_<L>sl_<S>s`` then
# ``_packedpi_ac`` in current GPT-NeoX (pack-impl "packed", allow-chopped); GPT-NeoX v1.0, which
# trained Pythia, names them without that suffix. The arrays are the same.
SCHEDULE_KINDS = ("doc", "sample", "shuffle")
NAMINGS = ("neox", "v1.0")  # the name pileprep writes first, then the name it links


def schedule_prefix(dataset_prefix: str | Path, num_samples: int, seq_length: int, seed: int,
                    naming: str = "neox") -> str:
    base = f"{dataset_prefix}_train_0_indexmap_{num_samples}ns_{seq_length}sl_{seed}s"
    return base + ("_packedpi_ac" if naming == "neox" else "")


def schedule_paths(dataset_prefix: str | Path, num_samples: int, seq_length: int, seed: int,
                   naming: str = "neox") -> dict[str, Path]:
    base = schedule_prefix(dataset_prefix, num_samples, seq_length, seed, naming)
    return {k: Path(f"{base}_{k}_idx.npy") for k in SCHEDULE_KINDS}


# The n-gram index (`pileprep index`): the suffix arrays of the token stream's shards in one
# file, every 4,096th suffix's key, and the record of what they were built from, written last
# (docs/formats.md).
NGRAM_DIR = "ngram"
NGRAM_META = "index.json"
NGRAM_SUFFIXES = "suffixes.sa"
NGRAM_KEYS = "keys.npy"
NGRAM_WORK = ".work"  # inside NGRAM_DIR: the shard tasks' completion records and keys
COUNT_WORK = ".count-work"  # inside NGRAM_DIR: a streaming count's parts, until it ends
CONTAMINATION_WORK = ".contamination-work"  # inside NGRAM_DIR: tokenized chunks and their rows


def ngram_keys_part(i: int) -> str:
    return f"keys-{i:05d}.npy"


# Per schedule, made by the first `pileprep count` over it (training.streammap): where every copy
# of every document starts in the training stream, and at which training sample every stream
# sample was consumed; the record naming the schedule files they came from is written last.
STREAM_MAP_DIR = "stream-maps"  # inside NGRAM_DIR


def stream_map_files(schedule_label: str) -> dict[str, str]:
    return {"copies": f"{schedule_label}_copies.npy", "trained": f"{schedule_label}_trained_at.npy",
            "meta": f"{schedule_label}.json"}

"""Settings: one dataclass per stage, loadable from ``pipelines/*.toml`` and overridden by flags.

Each stage's dataclass carries only what changes that stage's output, so its ``fingerprint``
can key the stage's work directory: change a setting and that stage (and the ones after it) is
redone, while earlier stages are reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import tomllib  # Python 3.11+, as pyproject.toml requires

from pileprep.core.errors import ConfigError

DEFAULT_TOKENIZER = "EleutherAI/gpt-neox-20b"
TOKENIZER_ENV = "PILEPREP_TOKENIZER"


def default_tokenizer() -> str:
    return os.environ.get(TOKENIZER_ENV) or DEFAULT_TOKENIZER


def setting_name(settings, name: str) -> str:
    """``section.key``: how errors name a setting, whether it came from a flag, a pipeline
    file or Python (the command line says its flag instead)."""
    return f"{settings.SECTION}.{name}"


def check_types(settings) -> None:
    """Every field of a settings dataclass has its declared type (a pipeline file or a caller
    can put anything there); a bool is not accepted as a number, an int is as a float."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, hint = getattr(settings, f.name), hints[f.name]
        allowed = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
        if not any(_is_a(value, t) for t in allowed):
            names = " or ".join("none" if t is type(None) else getattr(t, "__name__", str(t))
                                for t in allowed)
            raise ConfigError(f"{setting_name(settings, f.name)} must be {names}, not {value!r}")


def _is_a(value, t) -> bool:
    if t is type(None):
        return value is None
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(t)
    if origin is list:
        (item,) = typing.get_args(t)
        return isinstance(value, list) and all(_is_a(v, item) for v in value)
    return isinstance(value, t)


# A worker holds a partition consumed inline in memory (as Python strings) until it is tokenized.
MAX_PARTITION_BYTES = 1 << 30


@dataclass(frozen=True)
class ReadConfig:
    """Ingest: shards -> bounded partitions of validated records."""

    SECTION: ClassVar[str] = "read"

    inputs: list[str] = field(default_factory=list)
    partition_bytes: int = 32 * 1024 * 1024
    strict: bool = False  # stop at the first bad record instead of counting it
    text_column: str = "text"  # the field/column holding the document text

    def validate(self) -> None:
        check_types(self)
        if not self.inputs:
            raise ConfigError("no read.inputs given")
        if self.partition_bytes < 1024:
            raise ConfigError("read.partition_bytes must be at least 1024")
        if self.partition_bytes > MAX_PARTITION_BYTES:
            raise ConfigError("read.partition_bytes must be at most 1 GiB (a worker holds a "
                              "partition's text in memory while it tokenizes it)")
        if not self.text_column:
            raise ConfigError("read.text_column must not be empty")

    def stage_settings(self) -> dict:
        return {"partition_bytes": self.partition_bytes, "text_column": self.text_column}


@dataclass(frozen=True)
class TokenizeConfig:
    """Tokenize: partitions -> token parts (ids, + EOD with ``append_eod``) and provenance parts."""

    SECTION: ClassVar[str] = "tokenize"

    tokenizer: str = field(default_factory=default_tokenizer)
    batch_docs: int = 512  # documents handed to the encoder at once...
    batch_bytes: int = 1 << 20  # ...and about this much text at most
    append_eod: bool = True
    # A registered engine name (pileprep.tokenizer.engines; checked there) or "auto". Not part
    # of the fingerprint: every engine gives the same ids.
    engine: str = "auto"

    def validate(self) -> None:
        check_types(self)
        if self.batch_docs < 1 or self.batch_bytes < 1:
            raise ConfigError("tokenize.batch_docs and tokenize.batch_bytes must be positive")


@dataclass(frozen=True)
class PackConfig:
    """Pack: token parts -> ``<name>_text_document.bin/.idx`` and provenance."""

    SECTION: ClassVar[str] = "pack"

    output: str = ""
    name: str = ""  # "" : "pile", or "pile_<threshold>_deduped" for a deduplicated build

    def validate(self) -> None:
        check_types(self)
        if not self.output:
            raise ConfigError("no pack.output given")
        if self.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", self.name):
            raise ConfigError(f"pack.name {self.name!r}: use letters, digits and . _ + - "
                              "(it names files), starting with a letter or digit")


MAX_PERM = 1024  # beyond this, signatures cost more than they tell (and LSH tuning takes long)


@dataclass(frozen=True)
class DedupConfig:
    """Dedup: MinHash-LSH near-duplicate removal across all shards (off by default)."""

    SECTION: ClassVar[str] = "dedup"

    enabled: bool = False
    threshold: float = 0.87  # Jaccard similarity of shingle sets; Pythia's deduped Pile used 0.87
    num_perm: int = 128
    seed: int = 1
    shingle_words: int = 5
    bands: int | None = None  # None: datasketch's optimal (bands, rows) for the threshold
    rows: int | None = None
    verify: bool = True  # check candidates' estimated Jaccard before joining them

    def validate(self) -> None:
        check_types(self)
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"dedup.threshold must be in (0, 1], got {self.threshold}")
        if not 2 <= self.num_perm <= MAX_PERM:
            raise ConfigError(f"dedup.num_perm must be in 2..{MAX_PERM}, got {self.num_perm}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"dedup.seed must be in 0..2^32-1, got {self.seed}")
        if not 1 <= self.shingle_words <= 1000:
            raise ConfigError(f"dedup.shingle_words must be in 1..1000, got {self.shingle_words}")
        if (self.bands is None) != (self.rows is None):
            raise ConfigError("give both dedup.bands and dedup.rows, or neither")
        if self.bands is not None and (self.bands < 1 or self.rows < 1
                                       or self.bands * self.rows > self.num_perm):
            raise ConfigError(f"dedup.bands x dedup.rows must be positive and at most dedup.num_perm "
                              f"({self.num_perm})")

    def stage_settings(self, bands_rows: tuple[int, int]) -> dict:
        """The settings recorded in the manifest, with the LSH banding actually used."""
        return dataclasses.asdict(self) | {"bands_rows": list(bands_rows)}

    def default_name(self) -> str:
        return f"pile_{self.threshold:g}_deduped"


HEADROOM = 1.005  # GPT-NeoX asks weighted datasets for 0.5 % more samples than it trains on


@dataclass(frozen=True)
class ScheduleConfig:
    """Schedule: GPT-NeoX's training order; Pythia's values by default."""

    SECTION: ClassVar[str] = "schedule"

    seq_length: int = 2048
    batch_size: int = 1024
    train_iters: int = 143000
    seed: int = 1234

    def validate(self) -> None:
        check_types(self)
        for name in ("seq_length", "batch_size", "train_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{setting_name(self, name)} must be positive")
        if self.seq_length < 2:
            raise ConfigError("schedule.seq_length must be at least 2")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"schedule.seed must be in 0..2^32-1 (numpy's RandomState), got {self.seed}")

    @property
    def num_samples(self) -> int:
        # Same float arithmetic as GPT-NeoX: ceil(num_samples * weight * 1.005), weight 1.0.
        return int(math.ceil(self.train_iters * self.batch_size * 1.0 * HEADROOM))



@dataclass(frozen=True)
class ClusterConfig:
    """Where Dask runs the stages. Does not affect output bytes."""

    SECTION: ClassVar[str] = "cluster"

    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    scheduler: str | None = None  # address of an existing cluster, or "synchronous"
    memory_limit: str = "auto"
    connect_timeout: float = 30.0  # seconds to reach a --scheduler

    def validate(self) -> None:
        check_types(self)
        if self.workers < 1:
            raise ConfigError("cluster.workers must be at least 1")
        if not self.connect_timeout > 0:
            raise ConfigError("cluster.connect_timeout must be more than 0 seconds")
        if self.memory_limit != "auto" and not _positive_size(self.memory_limit):
            raise ConfigError(f"cluster.memory_limit must be auto or a size such as 4GiB, not "
                              f"{self.memory_limit!r}")


def _positive_size(text: str) -> bool:
    """Whether Dask reads ``text`` as a positive number of bytes."""
    from dask.utils import parse_bytes

    try:
        return parse_bytes(text) > 0
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class BuildConfig:
    read: ReadConfig = field(default_factory=ReadConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    schedule: ScheduleConfig | None = field(default_factory=ScheduleConfig)  # None: no schedule
    quiet: bool = False
    keep_work: bool = False

    def validate(self) -> None:
        for part in (self.read, self.tokenize, self.dedup, self.pack, self.cluster, self.schedule):
            if part is not None:
                part.validate()

    @property
    def dataset_name(self) -> str:
        if self.pack.name:
            return self.pack.name
        return self.dedup.default_name() if self.dedup.enabled else "pile"

    def settings(self, bands_rows: tuple[int, int] | None = None) -> dict:
        """The settings that determine the output bytes, for the manifest (``bands_rows``: the
        LSH banding a dedup build used).

        Partition sizes, worker counts and the scheduler are left out on purpose: they change
        how the work is cut, never what it produces.
        """
        out = {
            **({"read": {"text_column": self.read.text_column}}
               if self.read.text_column != "text" else {}),
            "tokenize": {"append_eod": self.tokenize.append_eod,
                         "tokenizer": self.tokenize.tokenizer},
            "pack": {"name": self.dataset_name},
        }
        if self.dedup.enabled:
            out["dedup"] = self.dedup.stage_settings(bands_rows)
        return out


_SECTIONS = {"read": ReadConfig, "tokenize": TokenizeConfig, "dedup": DedupConfig, "pack": PackConfig,
             "cluster": ClusterConfig, "schedule": ScheduleConfig}


def load_toml(path: str | Path) -> BuildConfig:
    """Read a pipeline file: sections ``[read] [tokenize] [dedup] [pack] [cluster] [schedule]``;
    unknown keys are refused."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc}") from None
    changes = {}
    for section, values in data.items():
        if section not in _SECTIONS or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]")
        names = {f.name for f in dataclasses.fields(_SECTIONS[section])}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]!r} in [{section}]")
        changes.update({f"{section}.{k}": v for k, v in values.items()})
    return with_settings(BuildConfig(), changes)


def with_settings(cfg: BuildConfig, changes: dict[str, Any]) -> BuildConfig:
    """``cfg`` with settings changed: ``{"section.key": value}``, or ``{"quiet": value}`` for a
    field of the build itself. Settings are frozen: a callee never changes its caller's."""
    sections: dict[str, dict] = {}
    top = {}
    for name, value in changes.items():
        section, _, key = name.rpartition(".")
        if section:
            sections.setdefault(section, {})[key] = value
        else:
            top[name] = value
    replaced = {section: dataclasses.replace(getattr(cfg, section) or _SECTIONS[section](), **kv)
                for section, kv in sections.items()}
    return dataclasses.replace(cfg, **replaced, **top)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able settings, used to key work directories."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

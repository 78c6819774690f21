"""Kill -9 and resume, lost workers, write errors, `pileprep verify`, setting errors."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pileprep.core import faults
from pileprep.cli.main import main
from pileprep.core.config import ScheduleConfig, with_settings
from pileprep.jobs.build import build
from pileprep.checks.verify import verify
from pileprep.training import schedule_files

from helpers import make_config

pytestmark = pytest.mark.slow  # kills, restarts and real clusters: minutes

SCHEDULE = ["--seq-length", "64", "--batch-size", "4", "--train-iters", "30"]
NAME = "pile_0.87_deduped_text_document"


# The CLI with every --dedup step as rounds of tasks, as for a corpus over LOCAL_BYTES, and a
# record of the kept tokens after every part, as for parts of RECORD_BYTES (these are far
# smaller: the driver would run the LSH steps at once and append the kept tokens).
IN_TASKS = ("import sys; from pileprep.stages import dedup, pack; dedup.LOCAL_BYTES = 0; "
            "pack.RECORD_BYTES = 0; from pileprep.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
# The CLI with the driver's drop and append of a small corpus recorded after every part.
PER_PART = ("import sys; from pileprep.stages import dedup; dedup.APPEND_SYNC_BYTES = 1; "
            "from pileprep.cli.main import main; sys.exit(main(sys.argv[1:]))")


def _cli(*args, env=None, in_tasks=False, per_part=False):
    """Run the CLI in its own process group (the kill tests kill the whole group)."""
    command = (["-c", IN_TASKS] if in_tasks else ["-c", PER_PART] if per_part
               else ["-m", "pileprep.cli"])
    return subprocess.run([sys.executable, *command, *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, start_new_session=True)


def _build_args(corpus, out, *extra):
    return ["build", "-i", str(corpus), "-o", str(out), "--dedup", "--partition-bytes", "60000",
            *SCHEDULE, *extra]


def _files(d):
    """Output bytes, except report.json (timings) and the GPT-NeoX fragment, whose only
    difference between two directories is the directory's own path, which is replaced."""
    return {p.name: (p.read_text().replace(str(d), "OUT").encode() if p.name.startswith("gpt_neox_")
                     else p.read_bytes())
            for p in d.iterdir() if p.is_file() and p.name != "report.json"}


@pytest.fixture(scope="module")
def reference(dirty_corpus, tmp_path_factory):
    """An uninterrupted deduplicated build with a schedule, on the synchronous scheduler."""
    out = tmp_path_factory.mktemp("ref")
    r = _cli(*_build_args(dirty_corpus, out, "--scheduler", "synchronous", "--quiet"))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("point", [
    "ingest:1", "ingest:3", "tokenize:1", "tokenize:5", "dedup:1", "dedup:10", "dedup:12",
    "parts:append:3", "tasks:dedup:12", "tasks:dedup:40", "tasks:dedup:50", "pack:1",
    "schedule:1", "commit:1"])
def test_kill_9_anywhere_then_resume_gives_identical_bytes(dirty_corpus, reference, tmp_path, point):
    """9 partitions: dedup:1-9 sign them, dedup:10 runs the LSH steps at once and 11-19 drop
    the removed documents, appending each part's kept tokens (recorded after each with
    ``parts:``: killed after the third record, the rerun takes three parts as appended); as
    rounds of tasks (``tasks:``), 10-38 are the LSH steps, 39-47 the drops and 48-56 the range
    writes of the kept tokens."""
    in_tasks, per_part = point.startswith("tasks:"), point.startswith("parts:")
    point = point.removeprefix("tasks:").removeprefix("parts:")
    args = _build_args(dirty_corpus, tmp_path, "--scheduler", "synchronous")
    killed = _cli(*args, env={faults.KILL_AT: point}, in_tasks=in_tasks, per_part=per_part)
    assert killed.returncode == -9, killed.stderr[-2000:]
    if per_part:  # the first two recorded parts' tokens are gone: the rerun must not read them
        assert len(list(tmp_path.glob(".pileprep-work/tokens-*/*.bin"))) == 9 - 2
    resumed = _cli(*args, in_tasks=in_tasks, per_part=per_part)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _files(tmp_path) == _files(reference)
    stage = point.split(":")[0]
    if point in ("dedup:10", "dedup:40"):  # after every shard was read, tokenized and signed
        assert "ingest: reusing 3 of 3 shards" in resumed.stderr
    if point == "tokenize:5":  # consumed inline as the shards were read: the first four are done
        assert "tokenize: reusing 4 of" in resumed.stderr
    if stage in ("pack", "schedule"):
        assert "ingest: reusing 3 of 3 shards" in resumed.stderr
    if stage in ("dedup", "pack", "schedule"):
        assert "tokenize: reusing" in resumed.stderr
    if point in ("dedup:10", "dedup:12", "dedup:40", "dedup:50", "append:3", "pack:1",
                 "schedule:1"):
        assert "minhash: reusing" in resumed.stderr
    if per_part:  # the parts recorded as appended are not read from their (deleted) .bin again
        assert "ingest: reusing 3 of 3 shards" in resumed.stderr
    if stage == "commit":
        assert "finished moving the outputs of an interrupted build" in resumed.stderr
    assert verify(tmp_path).problems == []


@pytest.mark.parametrize("dedup", [False, True])
def test_resume_after_consumed_intermediates_were_deleted(dirty_corpus, reference, tmp_path, dedup):
    """Killed after partitions and token parts were consumed and deleted: the rerun takes the
    consumers' records for them, redoes only the rest, and gives the same bytes."""
    args = ["build", "-i", str(dirty_corpus), "-o", str(tmp_path / "out"), "--partition-bytes",
            "60000", "--scheduler", "synchronous", *SCHEDULE] + (["--dedup"] if dedup else [])
    # With --dedup as rounds of tasks: the kept tokens are recorded part by part (appended
    # by the driver, a part this small is one record in all).
    killed = _cli(*args, env={faults.KILL_AT: "append:3"}, in_tasks=dedup)
    assert killed.returncode == -9, killed.stderr[-2000:]
    work = tmp_path / "out" / ".pileprep-work"
    tokenized = [p.name.removesuffix(".done.json") for p in work.glob("tokens-*/*.done.json")]
    gone = [s for s in tokenized if not next(work.glob(f"ingest-*/{s}.parquet"), None)]
    assert gone  # partitions were deleted while the build ran
    assert not list(work.glob("tokens-*/00.jsonl.zst.00000.bin"))  # appended, then deleted
    read = len(list(work.glob("ingest-*/*.zst.done.json")))
    resumed = _cli(*args, in_tasks=dedup)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # every finished read is reused though its partitions are gone: their readers finished
    assert read >= 1 and f"ingest: reusing {read} of 3 shards" in resumed.stderr
    assert "tokenize: reusing" in resumed.stderr
    if dedup:
        assert _files(tmp_path / "out") == _files(reference)
    else:
        plain = tmp_path / "plain"
        assert _cli(*[a if a != str(tmp_path / "out") else str(plain) for a in args]).returncode == 0
        assert _files(tmp_path / "out") == _files(plain)
    assert verify(tmp_path / "out").problems == []


def test_resume_after_partitions_handed_off_to_other_workers(dirty_corpus, tmp_path):
    """One shard, two workers: the reading worker writes partitions for the other one (the
    hand-off flag is up), and a build killed while tokenizing resumes to the same bytes."""
    import json

    shard = sorted(dirty_corpus.iterdir())[0]
    args = ["build", "-i", str(shard), "-o", str(tmp_path / "out"), "--partition-bytes", "1024",
            "--workers", "2", "--no-schedule"]
    killed = _cli(*args, env={faults.KILL_AT: "tokenize:4"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    work = tmp_path / "out" / ".pileprep-work"
    announced = [json.loads(p.read_text()) for p in work.glob("ingest-*/*.part.json")]
    assert any(not part["inline"] for part in announced)  # written for another worker
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "tokenize: reusing" in resumed.stderr
    plain = tmp_path / "plain"
    assert _cli(*[a if a != str(tmp_path / "out") else str(plain) for a in args],
                "--scheduler", "synchronous").returncode == 0
    assert _files(tmp_path / "out") == _files(plain)


@pytest.mark.parametrize("code,name", [(errno.ENOSPC, "No space left on device"),
                                       (errno.EACCES, "Permission denied")])
@pytest.mark.parametrize("mode", ["plain", "dedup", "dedup-ranges"])
def test_write_error_names_the_path_and_keeps_the_previous_output(
        dirty_corpus, reference, tmp_path, monkeypatch, capsys, code, name, mode):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = _files(out)
    from pileprep.dedup import apply
    from pileprep.stages import dedup as dedup_stage, pack

    calls = []
    dedup = mode != "plain"
    if mode == "dedup-ranges":  # the kept documents are written range by range: the third fails
        monkeypatch.setattr(dedup_stage, "LOCAL_BYTES", 0)
        def failing(fd, data, at):  # noqa: E306 - an OSError with no file name, as os.pwrite's
            calls.append(len(data))
            if len(calls) == 3:
                raise OSError(code, os.strerror(code))
            return os.pwrite(fd, data, at)

        monkeypatch.setattr(apply, "pwrite", failing)
    else:  # the .bin grows part by part (the kept parts of a small --dedup build too): its
        # third append fails
        def failing(f, data):  # noqa: E306
            calls.append(len(data))
            if len(calls) == 3:
                raise OSError(code, os.strerror(code), f.name)
            f.write(data)

        monkeypatch.setattr(pack, "append_bytes", failing)
    args = _build_args(dirty_corpus, out, "--scheduler", "synchronous", "--quiet",
                       "--partition-bytes", "70000", "--overwrite")
    rc = main([a for a in args if dedup or a != "--dedup"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert name in err and ".bin" in err  # names the file it could not write
    assert len(calls) == 3
    assert _files(out) == before
    assert verify(out).problems == []


def test_changed_setting_redoes_only_later_stages(dirty_corpus, tokenizer_spec, tmp_path, capsys):
    cfg = make_config([dirty_corpus], tmp_path, tokenizer_spec, partition_bytes=60_000,
                      keep_work=True, name="")
    cfg = with_settings(cfg, {"dedup.enabled": True, "quiet": False})
    build(cfg)
    capsys.readouterr()
    cfg = with_settings(cfg, {"dedup.threshold": 0.8})  # dedup changes: ingest, tokens and signatures stay
    build(cfg, overwrite=True)
    err = capsys.readouterr().err
    assert "ingest: reusing 3 of 3" in err and "tokenize: reusing" in err and "minhash: reusing" in err
    assert "lsh: reusing" not in err and "lsh bands: reusing" not in err
    cfg = with_settings(cfg, {"read.partition_bytes": 80_000})  # ingest changes: everything after it is redone
    build(cfg, overwrite=True)
    err = capsys.readouterr().err
    assert "reusing" not in err


@pytest.fixture()
def broken(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    return out


def _problems(out):
    return " | ".join(verify(out).problems)


def test_verify_passes_a_good_build(reference, capsys):
    assert main(["verify", str(reference)]) == 0
    assert capsys.readouterr().out.strip().endswith("verified")


def test_verify_truncated_bin(broken):
    path = broken / f"{NAME}.bin"
    path.write_bytes(path.read_bytes()[:-10])
    assert f"{NAME}.bin" in _problems(broken) and "truncated" in _problems(broken)


@pytest.mark.parametrize("suffix", [".bin", ".idx"])
def test_verify_flipped_byte(broken, suffix, capsys):
    path = broken / f"{NAME}{suffix}"
    data = bytearray(path.read_bytes())
    data[len(data) - 7] ^= 0x01
    path.write_bytes(bytes(data))
    assert f"{NAME}{suffix}: sha256 differs" in _problems(broken)
    assert main(["verify", str(broken)]) == 1
    assert "PROBLEM" in capsys.readouterr().out


def test_verify_idx_pointer_damage_is_structural(broken):
    path = broken / f"{NAME}.idx"
    data = bytearray(path.read_bytes())
    count = int.from_bytes(data[18:26], "little")
    data[34 + 4 * count + 8] ^= 0x10  # the second pointer
    path.write_bytes(bytes(data))
    assert "pointer of sequence 1" in _problems(broken)


def test_verify_missing_schedule_file(broken):
    cfg = ScheduleConfig(seq_length=64, batch_size=4, train_iters=30)
    schedule_files.paths(broken / NAME, cfg)["shuffle"].unlink()
    assert "missing" in _problems(broken) and "shuffle_idx" in _problems(broken)


def test_verify_provenance_of_wrong_length(broken):
    path = broken / "provenance.parquet"
    t = pq.read_table(path)
    pq.write_table(t.slice(0, t.num_rows - 1), path)
    assert f"{t.num_rows - 1} rows for {t.num_rows} sequences" in _problems(broken)


def test_verify_unfinished_commit(broken):
    (broken / ".pileprep-staging").mkdir()
    (broken / ".pileprep-staging" / "COMMIT.json").write_text('{"files": []}')
    assert "interrupted build" in _problems(broken)


@pytest.mark.parametrize("args,message", [
    (["-i", "EMPTY", "-o", "OUT"], "no shards"),
    (["-i", "IN", "-o", "OUT", "--dedup", "--threshold", "0"], "--threshold must be in (0, 1]"),
    (["-i", "IN", "-o", "OUT", "--dedup", "--threshold", "1.5"], "--threshold must be in (0, 1]"),
    (["-i", "IN", "-o", "OUT", "--batch-size", "0"], "--batch-size must be positive"),
    (["-i", "IN", "-o", "OUT", "--seq-length", "0"], "--seq-length must be positive"),
    (["-i", "IN", "-o", "OUT", "--train-iters", "-1"], "--train-iters must be positive"),
    (["-i", "IN", "-o", "OUT", "--on-bad-record", "stop", "--partition-bytes", "10"], "--partition-bytes"),
    (["-i", "IN", "-o", "OUT", "--partition-bytes", "2GiB"], "--partition-bytes must be at most 1 GiB"),
])
def test_setting_errors_before_any_work(tmp_path, args, message, capsys):
    (tmp_path / "IN").mkdir()
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "IN" / "00.jsonl").write_text('{"text": "x"}\n')
    subst = {"OUT": str(tmp_path / "out"), "IN": str(tmp_path / "IN"), "EMPTY": str(tmp_path / "EMPTY")}
    code = main(["build", *[subst.get(a, a) for a in args], "--scheduler", "synchronous", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / ".pileprep-work").exists()


def test_output_dir_holding_another_build_is_refused_before_work(reference, dirty_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    code = main(_build_args(dirty_corpus, out, "--scheduler", "synchronous", "--quiet",
                            "--threshold", "0.9"))
    assert code == 2 and "holds a different build" in capsys.readouterr().err
    assert not (out / ".pileprep-work").exists()


def test_on_bad_record_stop_is_strict(dirty_corpus, tmp_path, capsys):
    code = main(["build", "-i", str(dirty_corpus), "-o", str(tmp_path), "--on-bad-record", "stop",
                 "--scheduler", "synchronous", "--quiet", "--no-schedule"])
    assert code == 2 and "invalid_json" in capsys.readouterr().err

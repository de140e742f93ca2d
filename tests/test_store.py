import pytest
from PIL import Image

from bench import BenchError
from bench.store import RunStore

IDENTITY = {"method": "sd", "model": "preset:tiny", "suite": {"name": "dreambench", "samples_hash": "abc"}}


def _image(value: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (value, value, value))


def test_write_then_read_records(tmp_path):
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {"plan": {"seeds": [0]}})
    with store.writer(0) as w:
        rec = w.write("dreambench/dog/000/s0/i0", 0, _image(10), 0.5, {"loops": 3})
    assert store.image_path(rec["key"]) == tmp_path / "run/images/dog/000/s0/i0.png"
    records = store.records()
    assert records["dreambench/dog/000/s0/i0"]["loops"] == 3
    assert store.done_keys() == {"dreambench/dog/000/s0/i0"}
    assert Image.open(store.root / rec["image"]).getpixel((0, 0)) == (10, 10, 10)


def test_mismatched_identity_is_refused_with_the_difference(tmp_path):
    RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    changed = {**IDENTITY, "model": "preset:sd21-random"}
    with pytest.raises(BenchError) as err:
        RunStore.open_for_run(tmp_path / "run", changed, {})
    assert "model: 'preset:tiny' -> 'preset:sd21-random'" in str(err.value)
    # the same identity reopens, and plans accumulate their seeds
    RunStore.open_for_run(tmp_path / "run", IDENTITY, {"plan": {"seeds": [1]}})
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {"plan": {"seeds": [0]}})
    assert store.read_run()["plan"]["seeds"] == [0, 1]


def test_a_line_cut_by_a_kill_is_skipped_and_not_glued_to_the_next(tmp_path):
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    with store.writer(0) as w:
        w.write("dreambench/dog/000/s0/i0", 0, _image(1), 0.1)
    path = store.generations_dir / "rank-00000.jsonl"
    with open(path, "a") as f:
        f.write('{"key": "dreambench/dog/000/s0/i1", "se')          # killed mid-line
    with store.writer(0) as w:
        w.write("dreambench/dog/001/s0/i0", 0, _image(2), 0.1)
    assert set(store.records()) == {"dreambench/dog/000/s0/i0", "dreambench/dog/001/s0/i0"}


def test_ranks_write_their_own_files_and_readers_merge(tmp_path):
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    with store.writer(0) as w0, store.writer(1) as w1:
        w0.write("dreambench/dog/000/s0/i0", 0, _image(1), 0.1)
        w1.write("dreambench/dog/000/s0/i1", 0, _image(2), 0.1)
    assert sorted(p.name for p in store.generations_dir.iterdir()) == ["rank-00000.jsonl", "rank-00001.jsonl"]
    assert len(store.records()) == 2


def test_record_without_image_is_not_done_and_stale_temporaries_are_removed(tmp_path):
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    with store.writer(0) as w:
        rec = w.write("dreambench/dog/000/s0/i0", 0, _image(1), 0.1)
    (store.root / rec["image"]).unlink()
    assert store.done_keys() == set()
    stale = store.images_dir / "dog" / ".i9.png.123.tmp"
    stale.write_bytes(b"half an image")
    RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    assert not stale.exists()


def test_open_existing_names_the_missing_file(tmp_path):
    with pytest.raises(BenchError, match="run.json is missing"):
        RunStore.open_existing(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(BenchError, match="cannot read"):
        RunStore.open_existing(tmp_path).read_run()


KEY = "dreambench/dog/000/s0/i0"


def _dead_pid() -> int:
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_malformed_lines_are_skipped_with_one_counting_warning(tmp_path, capsys):
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    with store.writer(0) as w:
        w.write(KEY, 0, _image(1), 0.1)
    with open(store.generations_dir / "rank-00000.jsonl", "ab") as f:
        f.write(b'\xff\xfe not utf-8 \x80\n')                                  # not UTF-8
        f.write(b'garbage\n')                                                  # not JSON
        f.write(b'{"key": "dreambench/dog/000/s0/i1", "seed": 0}\n')           # no image, no sha256
        f.write(b'["a", "list"]\n')                                            # not a record
        f.write(b'{"key": "dreambench/dog/001/s0/i0", "se')                    # torn by a kill
    assert set(store.records()) == {KEY}
    assert set(store.records()) == {KEY}                                       # warned once per store
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 5 malformed line(s)" in err[0]


def test_a_truncated_or_replaced_image_is_not_done(tmp_path):
    import os
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    with store.writer(0) as w:
        rec = w.write(KEY, 0, _image(1), 0.1)
    path = store.root / rec["image"]
    original = path.read_bytes()
    assert store.done_keys() == {KEY} and store.done_keys(verify=True) == {KEY}

    path.write_bytes(original[:-10])                                 # truncated
    assert store.done_keys() == set()
    assert "truncated or replaced" in store.verified_records()[1][KEY]

    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0xFF                               # same size, other content
    path.write_bytes(bytes(changed))
    os.utime(path, ns=(rec["mtime_ns"] + 10**9,) * 2)                # coarse clocks: move it for sure
    assert store.done_keys() == set()                                # mtime moved: re-hashed
    os.utime(path, ns=(rec["mtime_ns"], rec["mtime_ns"]))            # even with the old mtime back,
    assert store.done_keys(verify=True) == set()                     # --verify re-hashes always
    path.write_bytes(original)
    assert store.done_keys() == {KEY}                                # the right bytes count again
    path.unlink()
    path.mkdir()
    assert "not a regular file" in store.verified_records()[1][KEY]


def test_temporaries_of_live_writers_are_kept_and_of_dead_ones_removed(tmp_path):
    import os
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    folder = store.images_dir / "dog" / "000" / "s0"
    folder.mkdir(parents=True)
    live = folder / f".i0.png.{os.getppid()}.tmp"                    # another live process writing now
    dead = folder / f".i1.png.{_dead_pid()}.tmp"
    stale_json = store.root / f".run.json.{_dead_pid()}.tmp"
    for p in (live, dead, stale_json):
        p.write_bytes(b"half")
    RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    assert live.exists() and not dead.exists() and not stale_json.exists()


def test_the_same_shard_twice_is_refused_naming_the_live_pid(tmp_path):
    import os
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    with store.lock_shard(0, 2):
        with pytest.raises(BenchError, match=f"shard 0/2 of .* is already being written by process {os.getpid()}"):
            RunStore(tmp_path / "run").lock_shard(0, 2)
        RunStore(tmp_path / "run").lock_shard(1, 2).release()     # another shard is fine
    RunStore(tmp_path / "run").lock_shard(0, 2).release()         # released with its holder


def test_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno
    import os
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with store.writer(0) as w:
        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(OSError):
            w.write(KEY, 0, _image(1), 0.1)
    assert [p for p in store.root.rglob("*.tmp")] == []
    assert store.records() == {}


@pytest.mark.parametrize("key", ["dreambench/../../x/000/s0/i0", "dreambench//000/s0/i0", "dreambench/a\\b/0/s0/i0",
                                 "dreambench/~/0/s0/i0", "dreambench/ok/../s0/i0"])
def test_keys_never_leave_the_images_folder(tmp_path, key):
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    with pytest.raises(BenchError, match="cannot be a folder name"):
        store.image_path(key)


def test_a_shard_held_by_another_process_is_refused_naming_its_pid(tmp_path):
    import subprocess
    import sys
    store = RunStore.open_for_run(tmp_path / "run", IDENTITY, {})
    holder = subprocess.Popen(
        [sys.executable, "-c", "from bench.store import RunStore; import sys, time; "
         f"lock = RunStore({str(store.root)!r}).lock_shard(0); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BenchError, match=f"already being written by process {holder.pid}"):
            store.lock_shard(0)
    finally:
        holder.kill()
        holder.wait()
    store.lock_shard(0).release()                # the kernel released it with the dead holder


def test_key_value_options_are_typed_and_ids_keep_their_leading_zeros():
    from bench.options import parse_params
    parsed = parse_params(["subjects=000001", "steps=10", "scale=0.5", "iterative=false",
                           "protocol=paper", "offset=-02", "zero=0"])
    assert parsed == {"subjects": "000001", "steps": 10, "scale": 0.5, "iterative": False,
                      "protocol": "paper", "offset": "-02", "zero": 0}

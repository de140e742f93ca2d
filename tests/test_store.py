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

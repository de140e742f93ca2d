"""Work that must not grow with the whole run: the resume check looks only at the shard's own
images, a file checked once per command is not decoded again, an imported image folder is read
once (and not again while unchanged), and a generated image is decoded only where its pixels are
prepared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

import bench.images as images
from bench import BenchError
from bench.store import RunStore


def _run(tmp_path, n: int = 6) -> RunStore:
    store = RunStore.open_for_run(tmp_path / "run", {"method": "x"}, {"plan": {"seeds": [0]}})
    with store.writer(0) as writer:
        for k in range(n):
            writer.write(f"suite/subject/000/s0/i{k}", 0, Image.new("RGB", (8, 8), (k, 0, 0)), 0.0)
    return store


def test_the_resume_check_looks_only_at_the_given_keys(tmp_path, monkeypatch):
    store = _run(tmp_path)
    keys = sorted(store.records())
    (store.root / store.records()[keys[0]]["image"]).unlink()            # another shard's image is gone
    checked = []
    original = RunStore.check_record
    monkeypatch.setattr(RunStore, "check_record", lambda self, rec, verify=False:
                        checked.append(rec["key"]) or original(self, rec, verify))
    mine = set(keys[3:]) | {"suite/subject/000/s0/i99"}                   # one of them not recorded yet
    good, bad = store.verified_records(keys=mine)
    assert sorted(checked) == keys[3:]
    assert set(good) == set(keys[3:]) and bad == {}
    good, bad = store.verified_records(keys=set(keys[:2]))
    assert set(good) == {keys[1]} and set(bad) == {keys[0]}
    assert set(store.verified_records()[1]) == {keys[0]}                 # no keys: every record, as before


def test_an_image_checked_once_is_not_decoded_again_until_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(path)
    decoded = []
    original = images.open_image
    monkeypatch.setattr(images, "open_image", lambda p: decoded.append(p) or original(p))
    images.check_image(path)
    images.check_image(path)
    assert len(decoded) == 1
    path.write_bytes(path.read_bytes()[:40])                              # replaced by a truncated file
    os.utime(path, ns=(1, 1))
    with pytest.raises(BenchError, match="a.png"):
        images.check_image(path)
    assert len(decoded) == 2


# ---- images made elsewhere: one read at import, the decode where the metrics need it -------------
MINI = Path(__file__).resolve().parents[1] / "datasets" / "mini-dreambench"


def _folder(root: Path, n: int = 4) -> Path:
    """``n`` PNGs in the external layout for the mini suite's subject 'dog'."""
    for k in range(n):
        path = root / "dog" / "000" / "s0" / f"i{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 20), (30 * k, 90, 120)).save(path)
    return root


def test_importing_a_folder_reads_each_file_once_and_an_unchanged_file_not_again(tmp_path, monkeypatch):
    import bench.external_images as external
    from bench.files import file_sha256

    folder = _folder(tmp_path / "theirs")
    original_open = images.open_image
    monkeypatch.setattr(images, "open_image", lambda p: pytest.fail(f"{p} was decoded at import")
                        if str(folder.resolve()) in str(p) else original_open(p))   # the suite's own: checked
    read = []
    original = external._read_checked
    monkeypatch.setattr(external, "_read_checked", lambda p: read.append(p) or original(p))
    store = external.prepare_external_run("dreambench", folder, tmp_path / "run", data_root=MINI)
    records = store.records()
    assert len(read) == 4 and all(r["sha256"] == file_sha256(r["image"]) for r in records.values())
    read.clear()
    external.prepare_external_run("dreambench", folder, tmp_path / "run", data_root=MINI)
    assert read == []                                         # size and mtime unchanged: the recorded hash
    changed = folder / "dog" / "000" / "s0" / "i1.png"
    Image.new("RGB", (24, 20), (1, 2, 3)).save(changed)
    os.utime(changed, ns=(10**18, 10**18))
    store = external.prepare_external_run("dreambench", folder, tmp_path / "run", data_root=MINI)
    assert read == [changed.resolve()]
    assert store.records()["dreambench/dog/000/s0/i1"]["sha256"] == file_sha256(changed)
    read.clear()
    external.prepare_external_run("dreambench", folder, tmp_path / "run", data_root=MINI, verify=True)
    assert len(read) == 4


def _text(path: Path) -> None:
    path.write_text("plain text, not an image\n")


@pytest.mark.parametrize("write, words", [
    (_text, "corrupt or unreadable image .*i1.png: cannot identify image file '.*i1.png'$"),
    (lambda path: Image.new("RGB", (600, 2)).save(path), "i1.png is 600x2 pixels: aspect ratio 300:1"),
], ids=["text", "aspect"])
def test_a_file_that_is_no_image_is_refused_at_import_in_one_line_as_a_decode_would(tmp_path, write, words):
    from bench.external_images import prepare_external_run

    folder = _folder(tmp_path / "theirs", 2)
    path = folder / "dog" / "000" / "s0" / "i1.png"
    write(path)
    with pytest.raises(BenchError, match=words) as info:
        prepare_external_run("dreambench", folder, tmp_path / "run", data_root=MINI)
    with pytest.raises(BenchError) as decoded:
        images.open_image(path)
    assert str(info.value) == str(decoded.value).replace(str(path), str(path.resolve()))


@pytest.mark.parametrize("workers", [0, 1])
def test_generated_images_are_decoded_once_where_the_metrics_need_them(tmp_path, monkeypatch, workers):
    """The main process stats the generated files (and reads each once to hash it at import); the
    decode, with its checks, happens once, in the process that prepares the pixels: a truncated
    file passes the import and is refused there, in one line naming it."""
    from bench.external_images import prepare_external_run
    from bench.scoring import score_run

    folder = _folder(tmp_path / "theirs", 3)
    cut = folder / "dog" / "000" / "s0" / "i2.png"
    cut.write_bytes(cut.read_bytes()[:60])
    store = prepare_external_run("dreambench", folder, tmp_path / "run", data_root=MINI, metric_preset="tiny",
                                 metrics="dino")
    main_pid, decoded = os.getpid(), []
    original = images.open_image

    def watched(path):
        if os.getpid() == main_pid and Path(path).parent.parent.parent.parent == folder.resolve():
            decoded.append(path)
        return original(path)
    monkeypatch.setattr(images, "open_image", watched)
    with pytest.raises(BenchError, match="i2.png") as info:
        score_run(store.root, progress=False, workers=workers)
    assert "corrupt or unreadable image" in str(info.value) and "\n" not in str(info.value)
    assert len(decoded) == (3 if workers == 0 else 0)       # with a worker: none in the main process

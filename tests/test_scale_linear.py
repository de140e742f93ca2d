"""Work that must not grow with the whole run: the resume check looks only at the shard's own
images, and a file checked once per command is not decoded again."""

from __future__ import annotations

import os

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

"""EZIGen editing: masked blending keeps the source trajectory outside the mask."""

import numpy as np
import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.types import GenRequest, LoadSpec
from methods.ezigen import EZIGenMethod

STEPS = 10          # inversion / denoising over the last 4 steps


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit")
    rng = np.random.default_rng(2)
    for name in ("subject", "source0", "source1"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    for i, box in enumerate([(16, 16, 48, 48), (0, 24, 40, 64)]):
        mask = np.zeros((64, 64), dtype=np.uint8)
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = 255
        Image.fromarray(mask).save(folder / f"mask{i}.png")
    return folder


def _edit_requests(files):
    return [GenRequest(key=f"edit/{i}", prompt="photo of a sks dog", class_noun="dog",
                       subject_images=(files / "subject.png",), seed=i,
                       source_image=files / f"source{i}.png", mask=files / f"mask{i}.png") for i in range(2)]


@pytest.fixture(scope="module")
def method():
    return EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), max_loops=3, protocol="paper")


def test_latents_outside_the_mask_follow_the_source_trajectory(method, files):
    trace = {}
    requests = _edit_requests(files)
    images, facts = method.editor.edit(requests, trace=trace)
    source, mask = trace["source_trajectory"], trace["mask"]
    keep = mask == 0
    assert 0 < int(keep.sum()) < keep.numel()
    assert sorted(source) == [0, 91, 181, 271, 361]          # clean + 4 inversion steps to t=361
    assert len(trace["steps"]) == 3                          # 3 loops (min_loops) for both samples
    for active, steps in trace["steps"]:
        rows = torch.tensor(active)
        assert [level for level, _ in steps] == [271, 181, 91, 0]
        for level, latents in steps:
            expected = source[level][rows]
            assert torch.equal(latents[keep[rows].expand_as(latents)], expected[keep[rows].expand_as(expected)])
        final = steps[-1][1]
        inside = ~keep[rows].expand_as(final)
        assert not torch.equal(final[inside], source[0][rows][inside])   # the edit changed the region
    assert [f["loops"] for f in facts] == [3, 3]
    # inversion 4 + guided denoising 8 per loop, plus the second and third loops' inversions, + reference
    assert [f["unet_calls"] for f in facts] == [1 + 3 * (4 + 8)] * 2


def test_edit_requests_through_generate(method, files):
    requests = _edit_requests(files)
    images = method.generate(requests[:1])
    assert images[0].size == (64, 64) and images[0].info["bench"]["task"] == "edit"
    assert "edit" in method.tasks
    no_mask = GenRequest(key="edit/x", prompt="p", class_noun="dog", subject_images=(files / "subject.png",),
                         seed=0, source_image=files / "source0.png")
    with pytest.raises(BenchError, match="edit/x has no mask"):
        method.generate([no_mask])


def test_one_pass_edit_keeps_the_clean_source_outside_the_mask(files):
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), iterative=False, protocol="paper")
    trace = {}
    _, facts = method.editor.edit(_edit_requests(files)[:1], trace=trace)
    (active, steps), = trace["steps"]
    keep = (trace["mask"] == 0).expand_as(steps[-1][1])
    assert torch.equal(steps[-1][1][keep], trace["source_trajectory"][0][keep])
    assert facts[0]["loops"] == 1 and facts[0]["unet_calls"] == 1 + 4 + 8

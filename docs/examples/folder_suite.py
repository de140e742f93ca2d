"""A worked example of a suite (docs/architecture.md, "Adding a suite").

``folders``: every sub-folder of the data root is a subject (its name is the class noun) and
its images are both the conditioning and the reference images; every subject gets the same
three prompts. The embedded mini DreamBench's ``dataset/`` folder has exactly this shape, so
``--preset smoke`` runs it offline.
"""

from __future__ import annotations

from bench import BenchError
from bench.suites.base import Suite
from bench.types import Sample

PROMPTS = ("a {} on the beach", "a {} in the snow", "a watercolor painting of a {}")
SUFFIXES = (".jpg", ".jpeg", ".png")


class FolderSuite(Suite):
    name = "folders"
    version = "1"                                    # bump when the samples change
    default_images_per_prompt = 2
    default_seeds = (0, 1)
    default_metrics = ("clip", "dino")
    default_root = "datasets/folders"                # where a user puts the data
    mini_root = "datasets/mini-dreambench/dataset"   # what --preset smoke uses
    leaderboard_columns = {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO"}
    scatter_axes = ("CLIP-T", "DINO")

    def samples(self) -> list[Sample]:
        subjects = sorted(p for p in self.root.iterdir() if p.is_dir())
        if not subjects:
            raise BenchError(f"{self.root}: no subject folders")
        out = []
        for folder in subjects:
            images = tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES))
            if not images:
                raise BenchError(f"{folder}: no images ({', '.join(SUFFIXES)})")
            for index, template in enumerate(PROMPTS):
                text = template.format(folder.name)
                out.append(Sample(suite=self.name, subject=folder.name, class_noun=folder.name,
                                  prompt_index=index, prompt=text, eval_text=text,
                                  subject_images=images[:1], reference_images=images))
        return out

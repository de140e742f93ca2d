"""The FastComposer single-subject set: 15 CelebA identities x 40 prompts (docs/protocols.md section 4).

Layout (mit-han-lab/fastcomposer): ``data/celeba_test_single/<id>/*.jpg``, one reference image
per identity (the first ``*.jpg`` sorted by name is the one used, as in FastComposer's
evaluation). ``--data-root`` may be the repository, its ``data/`` folder or
``celeba_test_single/`` itself.

Prompts: the 40 of FastComposer's ``evaluation/single_object/data.py``, in its order: 10
accessory (the DreamBench live-subject accessory prompts), 10 style, 10 action, 10 context (the
first 10 DreamBench prompts); ``prompt_index`` 0-39 follows that order and ``category`` names the
group. The subject is written ``a man img`` / ``a woman img`` (option ``identifier``, default
"img"); ``eval_text`` is the prompt with the identifier removed (``a man wearing a red hat``),
the text CLIP ViT-L/14 scores. 4 images per prompt: 15 x 40 x 4 = 2400 images per seed.

Options: ``identifier``; ``subjects`` (a subset of the 15 ids); ``prompt_indices`` (a subset of
0-39); ``preprocessing`` (how the scores read the generated images, docs/protocols.md section 4):

- ``official`` (default), as FastComposer's evaluation: each generated image is read back as the
  JPEG its generation script saves (Pillow's defaults, quality 75; a .jpg file is read as it is),
  CLIP ViT-L/14 gets a float tensor resized bicubically without antialiasing, and MTCNN looks at
  one image at a time;
- ``pil``: the harness's own reading: the saved file as it is, the CLIP model's own PIL transform
  (bicubic with antialiasing), MTCNN one image at a time.

The suite passes this to its metrics as their ``preprocessing`` parameter (``fastcomposer`` or
``pil``); ``--metric-param faceid.preprocessing=...`` overrides it for one metric. The embedded mini copy (``datasets/mini-fastcomposer``, smoke runs) holds a few of the
identities and defaults to prompts 0, 10, 20, 30 (the first of each group).
"""

from __future__ import annotations

from pathlib import Path

from bench import BenchError
from bench.suites.base import Suite
from bench.types import Sample

# FastComposer's IMAGE_TO_GENDER_EVAL (docs/protocols.md section 4).
IDENTITIES = {
    "000001": "man", "000181": "man", "000268": "man", "001854": "man", "002782": "man", "003785": "man",
    "000612": "woman", "000667": "woman", "001603": "woman", "002088": "woman", "002464": "woman",
    "002880": "woman", "002929": "woman", "002937": "woman", "004153": "woman",
}

# "{}" is the subject phrase ("man img"); order and wording as in FastComposer's evaluation.
PROMPTS: tuple[tuple[str, str], ...] = tuple(
    [("accessory", t) for t in (
        "a {} wearing a red hat", "a {} wearing a santa hat", "a {} wearing a rainbow scarf",
        "a {} wearing a black top hat and a monocle", "a {} in a chef outfit", "a {} in a firefighter outfit",
        "a {} in a police outfit", "a {} wearing pink glasses", "a {} wearing a yellow shirt",
        "a {} in a purple wizard outfit")]
    + [("style", t) for t in (
        "a painting of a {} in the style of Banksy", "a painting of a {} in the style of Vincent Van Gogh",
        "a colorful graffiti painting of a {}", "a watercolor painting of a {}", "a Greek marble sculpture of a {}",
        "a street art mural of a {}", "a black and white photograph of a {}", "a pointillism painting of a {}",
        "a Japanese woodblock print of a {}", "a street art stencil of a {}")]
    + [("action", t) for t in (
        "a {} riding a horse", "a {} holding a glass of wine", "a {} holding a piece of cake",
        "a {} giving a lecture", "a {} reading a book", "a {} gardening in the backyard", "a {} cooking a meal",
        "a {} working out at the gym", "a {} walking the dog", "a {} baking cookies")]
    + [("context", t) for t in (
        "a {} in the jungle", "a {} in the snow", "a {} on the beach", "a {} on a cobblestone street",
        "a {} on top of pink fabric", "a {} on top of a wooden floor", "a {} with a city in the background",
        "a {} with a mountain in the background", "a {} with a blue house in the background",
        "a {} on top of a purple rug in a forest")]
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Suite option -> the metrics' ``preprocessing`` parameter.
PREPROCESSING = {"official": "fastcomposer", "pil": "pil"}
# The embedded mini copy (smoke runs) uses the first prompt of each group unless told otherwise.
MINI_PROMPTS = (0, 10, 20, 30)


def celeba_dir(root: Path) -> Path:
    """The ``celeba_test_single`` folder from the repository root, ``data/`` or itself."""
    for candidate in (root / "data" / "celeba_test_single", root / "celeba_test_single", root):
        if candidate.is_dir() and any((candidate / i).is_dir() for i in IDENTITIES):
            return candidate
    raise BenchError(f"{root} is not the FastComposer data: none of {root / 'data' / 'celeba_test_single'}, "
                     f"{root / 'celeba_test_single'} or {root} holds the CelebA identity folders "
                     f"(e.g. {root / 'celeba_test_single' / '000001'})")


class FastComposer(Suite):
    name = "fastcomposer"
    version = "1"
    task = "generate"
    default_images_per_prompt = 4
    default_seeds = (0,)                  # the protocol reports mean and std over all images of one run
    aggregate = "images"
    default_metrics = ("faceid", "clip-t-l14")
    default_root = "datasets/fastcomposer"
    mini_root = "datasets/mini-fastcomposer"
    download_size = 463_000               # data/celeba_test_single: 15 JPEG files

    @classmethod
    def fetch_command(cls, root: Path) -> str:
        return ("git clone --depth 1 https://github.com/mit-han-lab/fastcomposer /tmp/fastcomposer && "
                f"mkdir -p {root}/data && cp -r /tmp/fastcomposer/data/celeba_test_single {root}/data/")
    scatter_axes = ("Prompt", "ID")
    leaderboard_columns = {"faceid": "ID", "clip_t": "Prompt", "arcface": "ID (ArcFace)",
                           "faceid_no_face": "No face (rate)", "arcface_no_face": "No face, ArcFace (rate)"}

    def __init__(self, root: Path, identifier: str = "img", subjects: list[str] | None = None,
                 prompt_indices: list[int] | None = None, preprocessing: str = "official", **options):
        super().__init__(root, identifier=identifier, subjects=subjects, prompt_indices=prompt_indices,
                         preprocessing=preprocessing, **options)
        if options:
            raise BenchError(f"unknown fastcomposer option(s) {', '.join(sorted(options))}; valid: identifier, "
                             "subjects, prompt_indices, preprocessing")
        if preprocessing not in PREPROCESSING:
            raise BenchError(f"fastcomposer: preprocessing={preprocessing!r} is not one of {', '.join(PREPROCESSING)}")
        self.preprocessing = preprocessing
        self.identifier = "" if identifier is None else str(identifier).strip()
        from bench.suites import REPO_ROOT
        self.is_mini = self.root.resolve() == (REPO_ROOT / self.mini_root).resolve()
        from bench.options import as_list
        # CelebA ids are six digits; `--suite-option subjects=000001` arrives as the number 1.
        subjects = [f"{int(s):06d}" if str(s).isdigit() else s for s in as_list(subjects, "fastcomposer option subjects") or []]
        indices = as_list(prompt_indices, "fastcomposer option prompt_indices")   # 5 -> ["5"], "0,3" -> ["0", "3"]
        if subjects:
            unknown = [s for s in subjects if s not in IDENTITIES]
            if unknown:
                raise BenchError(f"fastcomposer: unknown identity {', '.join(unknown)}; "
                                 f"valid: {', '.join(sorted(IDENTITIES))}")
        self.selected = list(subjects) if subjects else None
        if indices is None:               # not given: all 40 (the mini copy: one of each group)
            self.prompt_indices = list(MINI_PROMPTS) if self.is_mini else list(range(len(PROMPTS)))
            return
        parsed = []
        for item in indices:
            try:
                index = int(item)
            except ValueError:
                raise BenchError(f"fastcomposer option prompt_indices: {item!r} is not a prompt index "
                                 f"(integers 0-{len(PROMPTS) - 1}, e.g. prompt_indices=0,10)") from None
            if not 0 <= index < len(PROMPTS):
                raise BenchError(f"fastcomposer: prompt index {index} is outside 0-{len(PROMPTS) - 1}")
            parsed.append(index)
        self.prompt_indices = sorted(set(parsed))

    def metric_params(self) -> dict[str, dict]:
        """The protocol's reading of the images, as parameters of the metrics that take it."""
        value = PREPROCESSING[self.preprocessing]
        return {name: {"preprocessing": value} for name in ("faceid", "arcface", "clip-t-l14", "clip")}

    def identities(self) -> dict[str, tuple[Path, ...]]:
        """Identity -> its images (sorted); every selected identity must be present."""
        folder = celeba_dir(self.root)
        wanted = self.selected or sorted(IDENTITIES)
        if self.is_mini and not self.selected:           # the mini copy holds a few of the 15
            wanted = [i for i in wanted if (folder / i).is_dir()]
        missing = [i for i in wanted if not (folder / i).is_dir()]
        if missing:
            raise BenchError(f"fastcomposer: {len(missing)} of the {len(IDENTITIES)} identities are missing in "
                             f"{folder}: {', '.join(folder.joinpath(m).name for m in missing)}")
        out = {}
        for identity in wanted:
            images = tuple(sorted(p for p in (folder / identity).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            if not images:
                raise BenchError(f"fastcomposer: {folder / identity} has no .jpg image")
            out[identity] = images
        return out

    def samples(self) -> list[Sample]:
        out = []
        for identity, images in self.identities().items():
            noun = IDENTITIES[identity]
            reference = images[:1]                        # FastComposer compares with the first image
            phrase = f"{noun} {self.identifier}" if self.identifier else noun
            for index in self.prompt_indices:
                category, template = PROMPTS[index]
                out.append(Sample(
                    suite=self.name, subject=identity, class_noun=noun, prompt_index=index,
                    prompt=template.format(phrase), eval_text=template.format(noun),
                    subject_images=reference, reference_images=reference, category=category))
        return out

    def describe(self) -> dict:
        ids = self.identities()
        return {"identities": len(ids), "men": sum(IDENTITIES[i] == "man" for i in ids),
                "women": sum(IDENTITIES[i] == "woman" for i in ids), "prompts": len(self.prompt_indices),
                "images_per_seed": len(ids) * len(self.prompt_indices) * self.default_images_per_prompt}

    @classmethod
    def fetch_instructions(cls, dest: Path) -> str:
        return (f"the FastComposer evaluation identities cannot be downloaded here: clone "
                f"github.com/mit-han-lab/fastcomposer and copy its data/celeba_test_single/ to "
                f"{dest / 'data' / 'celeba_test_single'} (15 folders 000001 ... 004153, one .jpg each)")

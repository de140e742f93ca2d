"""DreamBench (google/dreambooth): 30 subjects x 25 prompts, CLIP-T / CLIP-I / DINO.

Reads the public repository's layout as it is (docs/protocols.md section 2): ``dataset/<subject>/NN.jpg``
and ``dataset/prompts_and_classes.txt``. That file is not a CSV: a ``Classes`` table, then two
Python-looking ``prompt_list = [ ... ]`` blocks (``Object Prompts``, ``Live Subject Prompts``)
of ``'a {0} {1} in the jungle'.format(unique_token, class_token),`` lines. It is parsed line by
line here, never evaluated.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from bench import BenchError
from bench.files import check_path_part
from bench.images import check_image
from bench.limits import MAX_PROMPT_LINE_CHARS, check_template, template_fields
from bench.suites.base import Suite
from bench.types import Sample

PROMPTS_FILE = "prompts_and_classes.txt"
#: docs/protocols.md section 2: live subjects are those whose class is cat or dog.
LIVE_CLASSES = frozenset({"cat", "dog"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
CONDITIONING_CHOICES = ("first", "all")

#: DreamBench's prompts file is 2 KB; a thousand subjects and prompts would be under 1 MB.
MAX_PROMPTS_FILE_BYTES = 4 * 2**20
_SECTION_TITLES = frozenset({"classes", "prompts", "object prompts", "live subject prompts"})
_LIST_OPEN = re.compile(r"^\w+\s*=\s*\[\s*$")


@dataclass(frozen=True)
class PromptsFile:
    """The parsed contents of prompts_and_classes.txt."""

    classes: dict[str, str]              # subject -> class noun, in file order
    object_prompts: tuple[str, ...]      # templates with {0} = identifier, {1} = class noun
    live_prompts: tuple[str, ...]

    def prompts_for(self, class_noun: str) -> tuple[str, ...]:
        return self.live_prompts if class_noun in LIVE_CLASSES else self.object_prompts


def render_prompt(template: str, identifier: str, class_noun: str) -> str:
    """Fill a template; an empty identifier leaves no double space (`a dog in the jungle`)."""
    return " ".join(template.format(identifier, class_noun).split())


#: The fields a DreamBench template may use: {0} the identifier, {1} the class noun.
TEMPLATE_FIELDS = frozenset({"0", "1"})


def _check_template(template: str, path: Path, lineno: int) -> None:
    check_template(template, TEMPLATE_FIELDS, f"{path}:{lineno}")
    if "1" not in template_fields(template):
        raise BenchError(f"{path}:{lineno}: prompt {template!r} must use {{1}} for the class noun "
                         "(and {0} for the identifier), nothing else")


def split_prompt_line(body: str) -> str | None:
    """The template of one prompt line ``'a {0} {1} ...'.format(unique_token, class_token),``
    (either quote style; the ``.format(...)`` call and the trailing comma optional), or None.
    A scan from both ends, no regular expression: linear in the line's length."""
    body = body.strip()
    if body.endswith(","):
        body = body[:-1].rstrip()
    if body.endswith(")"):
        opening = body.rfind("(")
        head = body[:opening].rstrip() if opening >= 0 else ""
        if opening < 0 or ")" in body[opening + 1:-1] or not head.endswith(".format"):
            return None
        body = head[:-len(".format")].rstrip()
    if len(body) < 2 or body[0] not in "'\"" or body[-1] != body[0]:
        return None
    return body[1:-1]


def _shown(line: str) -> str:
    return repr(line if len(line) <= 120 else line[:117] + "...")


def parse_prompts_file(path: Path) -> PromptsFile:
    """Parse prompts_and_classes.txt (tolerates CRLF, blank lines, either quote style,
    trailing commas, a closing bracket on the last prompt's line)."""
    path = Path(path)
    from bench.output_guard import require_regular

    require_regular(path, "DreamBench prompts file")       # a FIFO would block the read
    try:
        size = path.stat().st_size
        if size > MAX_PROMPTS_FILE_BYTES:
            raise BenchError(f"{path}: {size} bytes, more than the limit of {MAX_PROMPTS_FILE_BYTES} for a "
                             "prompts file (bench.suites.dreambench.MAX_PROMPTS_FILE_BYTES)")
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise BenchError(f"cannot read the DreamBench prompts file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BenchError(f"{path} is not a UTF-8 text file") from None

    classes: dict[str, str] = {}
    blocks: dict[str, list[str]] = {}
    section = None        # "classes" | "object" | "live" | None (between sections)
    in_list = False
    for lineno, raw in enumerate(lines, start=1):
        if len(raw) > MAX_PROMPT_LINE_CHARS:      # before any parsing: nothing scans a huge line
            raise BenchError(f"{path}:{lineno}: the line has {len(raw)} characters, more than the limit of "
                             f"{MAX_PROMPT_LINE_CHARS} (bench.limits.MAX_PROMPT_LINE_CHARS)")
        line = raw.strip()
        if not line:
            continue
        lowered = line.lower()
        if in_list and lowered in _SECTION_TITLES:
            raise BenchError(f"{path}:{lineno}: the prompt list above is not closed with ']' "
                             f"before the {line!r} section")
        if in_list:
            closing = line.endswith("]")
            body = line[:-1].strip() if closing else line
            if body:
                template = split_prompt_line(body)
                if template is None:
                    raise BenchError(f"{path}:{lineno}: cannot parse prompt line {_shown(line)} "
                                     "(expected 'a {0} {1} ...'.format(unique_token, class_token),)")
                _check_template(template, path, lineno)
                blocks[section].append(template)
            in_list = not closing
            continue
        if lowered == "classes":
            section = "classes"
        elif lowered == "prompts":
            section = None
        elif lowered == "object prompts":
            section = "object"
        elif lowered == "live subject prompts":
            section = "live"
        elif section in ("object", "live") and _LIST_OPEN.match(line):
            if section in blocks:
                raise BenchError(f"{path}:{lineno}: a second prompt list in the same section")
            blocks[section] = []
            in_list = True
        elif section == "classes":
            if lowered.replace(" ", "") == "subject_name,class":
                continue
            subject, sep, noun = (part.strip() for part in line.partition(","))
            if not sep or not subject or not noun or "," in noun:
                raise BenchError(f"{path}:{lineno}: expected 'subject,class' in the Classes table, "
                                 f"got {_shown(line)}")
            check_path_part(subject, f"{path}:{lineno}", "subject")   # it becomes a folder name
            if subject in classes:
                raise BenchError(f"{path}:{lineno}: subject {subject!r} is listed twice")
            classes[subject] = noun
        else:
            raise BenchError(f"{path}:{lineno}: unexpected line {_shown(line)}")

    if in_list:
        raise BenchError(f"{path}: the prompt list of section {section!r} is not closed with ']'")
    if not classes:
        raise BenchError(f"{path}: no 'Classes' table with subject,class lines")
    for key, title in (("object", "Object Prompts"), ("live", "Live Subject Prompts")):
        if not blocks.get(key):
            raise BenchError(f"{path}: missing or empty '{title}' prompt list")
    return PromptsFile(classes, tuple(blocks["object"]), tuple(blocks["live"]))


def resolve_dataset_dir(root: Path) -> Path:
    """--data-root may be the repository root or its dataset/ folder: return the dataset/ folder."""
    root = Path(root)
    if (root / "dataset" / PROMPTS_FILE).is_file():
        return root / "dataset"
    if (root / PROMPTS_FILE).is_file():
        return root
    if not root.is_dir():
        raise BenchError(f"DreamBench data root {root} is not a folder")
    expected = root / "dataset" / PROMPTS_FILE if (root / "dataset").is_dir() else root / PROMPTS_FILE
    raise BenchError(f"missing DreamBench prompts file {expected} (--data-root must be the "
                     "google/dreambooth repository root or its dataset/ folder)")


def subject_images(folder: Path) -> tuple[Path, ...]:
    """The subject's image files; an entry named like an image that is not a readable regular
    file (a folder, a broken or looping link) is refused, never silently dropped (it would
    change the subject's reference set)."""
    found = tuple(sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name))
    for p in found:
        if not p.is_file():
            raise BenchError(f"{p}: not a regular image file (a folder, or a broken or looping link); "
                             "replace it by the image or remove it")
    return found


def verify_image(path: Path) -> None:
    """A full decode (bench.images.check_image), so a corrupt or truncated file fails before
    generation, in one line naming it."""
    check_image(path)


def _as_subject_list(subjects) -> list[str] | None:
    from bench.options import as_list

    return as_list(subjects, "dreambench option subjects")


class DreamBench(Suite):
    """DreamBench as docs/protocols.md section 2 describes it.

    Options (constructor keywords, ``--suite-option KEY=VALUE`` on the CLI):
      identifier   token written before the class noun in the prompt the method sees
                   (default "": zero-shot methods are prompted `a dog in the jungle`);
                   eval_text never has it (CLIP-T protocol).
      conditioning "first" (default: the first image sorted by name, the single-image
                   protocol) or "all" subject images.
      subjects     a list (or comma-separated string) of subjects to keep.
    """

    name = "dreambench"
    version = "1"
    task = "generate"
    default_images_per_prompt = 4
    default_seeds = (0, 1, 2, 3, 4, 5)
    default_metrics = ("clip", "dino")
    default_root = "datasets/dreambench"
    mini_root = "datasets/mini-dreambench"
    download_size = 112_000_000           # the files of a depth-1 clone of google/dreambooth
    leaderboard_columns = {"clip_t": "CLIP-T", "clip_i": "CLIP-I", "dino": "DINO"}
    repository_url = "https://github.com/google/dreambooth"
    clone_timeout_s = 300

    def __init__(self, root: Path, identifier: str = "", conditioning: str = "first",
                 subjects: Iterable[str] | str | None = None, **unknown):
        if unknown:
            raise BenchError(f"unknown dreambench option(s) {', '.join(sorted(unknown))}; "
                             "valid: identifier, conditioning, subjects")
        if conditioning not in CONDITIONING_CHOICES:
            raise BenchError(f"dreambench option conditioning={conditioning!r}: choose "
                             f"{' or '.join(CONDITIONING_CHOICES)}")
        identifier = "" if identifier is None else str(identifier).strip()
        selected = _as_subject_list(subjects)
        options = {"identifier": identifier, "conditioning": conditioning}
        if selected is not None:
            options["subjects"] = selected
        super().__init__(root, **options)
        self.identifier = identifier
        self.conditioning = conditioning
        self.selected_subjects = selected
        self.dataset_dir = resolve_dataset_dir(self.root)
        self.prompts_path = self.dataset_dir / PROMPTS_FILE
        self._samples: list[Sample] | None = None

    def prompts_file(self) -> PromptsFile:
        return parse_prompts_file(self.prompts_path)

    def samples(self) -> list[Sample]:
        """One Sample per (subject, prompt), subjects in the classes table's order; validated once."""
        if self._samples is None:
            self._samples = self._build_samples()
        return list(self._samples)

    def _subjects(self, table: PromptsFile) -> list[str]:
        if self.selected_subjects is None:
            return list(table.classes)
        unknown = [s for s in self.selected_subjects if s not in table.classes]
        if unknown:
            raise BenchError(f"unknown DreamBench subject(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(table.classes)} (from {self.prompts_path})")
        return list(dict.fromkeys(self.selected_subjects))

    def _build_samples(self) -> list[Sample]:
        table = self.prompts_file()
        samples = []
        for subject in self._subjects(table):
            class_noun = table.classes[subject]
            folder = self.dataset_dir / subject
            if not folder.is_dir():
                raise BenchError(f"subject {subject!r} of {self.prompts_path} has no image folder {folder}")
            references = subject_images(folder)
            if not references:
                raise BenchError(f"subject folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for path in references:
                verify_image(path)
            conditioning = references[:1] if self.conditioning == "first" else references
            category = "live" if class_noun in LIVE_CLASSES else "object"
            for index, template in enumerate(table.prompts_for(class_noun)):
                samples.append(Sample(
                    suite=self.name, subject=subject, class_noun=class_noun, prompt_index=index,
                    prompt=render_prompt(template, self.identifier, class_noun),
                    eval_text=render_prompt(template, "", class_noun),
                    subject_images=conditioning, reference_images=references, category=category,
                    extra=(("template", template),)))
        return samples

    # ---- download ---------------------------------------------------------------------------
    @classmethod
    def fetch_instructions(cls, dest: Path) -> str:
        return (f"DreamBench is the dataset/ folder of {cls.repository_url} (CC BY 4.0). "
                f"Get it with `git clone --depth 1 {cls.repository_url} {dest}`, or download "
                f"{cls.repository_url}/archive/refs/heads/main.zip and unpack it so that "
                f"{Path(dest) / 'dataset' / PROMPTS_FILE} exists. Expected layout: "
                f"dataset/{PROMPTS_FILE} and dataset/<subject>/NN.jpg (30 subjects, 158 images). "
                "--data-root accepts either the repository root or its dataset/ folder.")

    @classmethod
    def fetch(cls, dest: Path) -> Path:
        """git clone the repository into a temporary folder next to dest, then move it into place."""
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            resolve_dataset_dir(dest)          # raises if it is not a DreamBench copy
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
            clone = Path(tmp) / "dreambooth"
            command = ["git", "clone", "--quiet", "--depth", "1", cls.repository_url, str(clone)]
            try:
                subprocess.run(command, check=True, capture_output=True, text=True,
                               timeout=cls.clone_timeout_s,
                               env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
                resolve_dataset_dir(clone)
            except FileNotFoundError:
                raise BenchError(f"git is not installed. {cls.fetch_instructions(dest)}") from None
            except subprocess.TimeoutExpired:
                raise BenchError(f"git clone timed out after {cls.clone_timeout_s} s. "
                                 f"{cls.fetch_instructions(dest)}") from None
            except subprocess.CalledProcessError as exc:
                reason = (exc.stderr or "").strip().splitlines()
                reason = reason[-1] if reason else f"exit status {exc.returncode}"
                raise BenchError(f"could not clone {cls.repository_url} ({reason}). "
                                 f"{cls.fetch_instructions(dest)}") from None
            if dest.exists():
                dest.rmdir()
            shutil.move(str(clone), str(dest))
        return dest

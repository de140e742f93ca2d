"""The pairwise questions of ``bench arena`` and how a verdict is read (docs/judge.md, "Arena").

The conversation texts are this project's own (not a release's). One user turn: the instruction,
then for CP the reference image, then "Image A:" and the first output, "Image B:" and the second
(both resized to 512x512 as for the pointwise judge). For PF the prompt is in the instruction and
there is no reference. The judge ends its answer with ``Better: A``, ``Better: B`` or
``Better: tie``; that line, found exactly once, is the verdict. Anything else is a failed verdict,
recorded with its raw text and never imputed.
"""

from __future__ import annotations

import re

CP_SUBJECT = (
    "The first image is a reference photo of a subject. Images A and B were generated to show that same subject "
    "in a new scene. Which of the two keeps the subject more faithfully: its identity, shape, colours, textures, "
    "markings and details? Ignore the background, the pose, the scene and the overall image quality. Explain "
    "briefly, then end your answer with exactly one line: 'Better: A', 'Better: B' or 'Better: tie' (when they "
    "are equally faithful).")
CP_STYLE = (
    "The first image shows an art style. Images A and B were generated in that style. Which of the two keeps the "
    "style more faithfully: its colours, strokes, textures, shapes and rendering? Ignore what the images depict. "
    "Explain briefly, then end your answer with exactly one line: 'Better: A', 'Better: B' or 'Better: tie' "
    "(when they are equally faithful).")
PF = (
    "Images A and B were generated for the prompt below. Which of the two shows more fully what the prompt asks "
    "for: every object, attribute, count, action, style and setting it names? Ignore image quality unless it "
    "hides something the prompt asks for. Explain briefly, then end your answer with exactly one line: "
    "'Better: A', 'Better: B' or 'Better: tie' (when they follow it equally well).\n\nPrompt: {prompt}")
VERDICT = re.compile(r"Better:\s*(A|B|tie|Tie|TIE)\b")      # "Better: a bit ..." is no verdict
ASK_VERSION = "1"                # the texts and the parser: part of every arena request's identity


def conversation(kind: str, category: str, prompt: str, reference, first, second) -> list[dict]:
    """The pairwise conversation (the neutral form of bench.metrics.judge_backends)."""
    if kind == "cp":
        parts = [("text", CP_STYLE if category == "style" else CP_SUBJECT), ("text", "Reference:"),
                 ("image", reference)]
    else:
        parts = [("text", PF.format(prompt=prompt))]
    parts += [("text", "Image A:"), ("image", first), ("text", "Image B:"), ("image", second)]
    return [{"role": "user", "content": parts}]


def parse_verdict(text: str, refused: bool = False) -> tuple[str | None, str | None]:
    """("A" | "B" | "tie", None) or (None, why it failed)."""
    if refused:
        return None, "refusal"
    if not text or not text.strip():
        return None, "empty answer"
    found = VERDICT.findall(text)
    if not found:
        return None, "no verdict"
    if len(found) > 1:
        return None, f"{len(found)} verdicts"
    value = found[0]
    return ("tie" if value.lower() == "tie" else value), None

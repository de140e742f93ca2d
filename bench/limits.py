"""Named limits on every size that comes from a data file or an option, checked before it costs
anything (docs/architecture.md, "Limits"). One place, so that every suite, method and reader
refuses the same nonsense with the same numbers; a suite that needs another bound names its
own constant beside these and says why.

The numbers are generous: each is far above what the published benchmarks hold (quoted beside
it) and far below what would take minutes or gigabytes to process.
"""

from __future__ import annotations

# ---- text ----------------------------------------------------------------------------------
#: One line of a prompts file (DreamBench's longest is under 100 characters). Checked before
#: any regular expression sees the line.
MAX_PROMPT_LINE_CHARS = 2_000
#: A subject (collection) name in UTF-8 bytes: it becomes a folder of the run and a page of the
#: HTML report, and file systems allow 255 bytes a name (DreamBench's longest is 19 characters;
#: a DreamBench++ collection id adds a prefix of up to 23 bytes to its subject name).
MAX_NAME_BYTES = 240
#: A prompt after its template is filled in (what a method's tokenizer receives).
MAX_PROMPT_CHARS = 2_000
#: Text handed to a tokenizer: CLIP keeps 77 tokens and a token of its vocabulary is at most a
#: few dozen characters, so cutting (whitespace runs collapsed, as CLIP's own cleaning does) at
#: this many characters first keeps everything that survives truncation (bench.limits.clip_text).
MAX_TOKENIZER_CHARS = 77 * 32

#: A library's reason quoted in one of our error lines (cut at a sentence end, never mid-word).
MAX_REASON_CHARS = 600

# ---- images --------------------------------------------------------------------------------
#: Width or height of an image file, read from its header before it is decoded.
MAX_IMAGE_SIDE = 16_384
#: Pixels of an image file (DreamBench's largest photo is about 12 Mpx).
MAX_IMAGE_PIXELS = 100_000_000
#: Long side over short side (DreamBench's photos are at most 2:1; a 5000x1 file is not a photo
#: of a subject and would resize to a zero-pixel side).
MAX_IMAGE_ASPECT = 10.0

# ---- structured files ----------------------------------------------------------------------
#: A JSON file the harness reads whole (run.json, bbox.json, a baseline): bytes and nesting.
MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64
#: One line of a records file (generations/rank-*.jsonl); longer lines are skipped as torn.
MAX_JSONL_LINE_BYTES = 1 * 2**20
#: A scores.parquet file (18,000 images x 10 metrics is a few MB).
MAX_PARQUET_BYTES = 4 * 2**30


# statistics (issue 30/32) -----------------------------------------------------------------
#: Bootstrap resamples and sign-flip permutations (--resamples; default 2,000): 100,000 is
#: 50 times the default and still a few seconds per (run, metric) on DreamBench's 30 subjects.
MAX_RESAMPLES = 100_000
#: Resampling units above which intervals and p-values use their closed forms (t interval on
#: the linearised standard error, normal approximation of the sign-flip test) instead of
#: resampling: cost linear in the units. At this many units the two agree to Monte-Carlo error
#: (DreamBench has 30 subjects, 18,000 images).
MAX_RESAMPLED_UNITS = 50_000
#: Rows of a score table (`bench stats`, `bench power`; DreamBench x 10 runs x 3 metrics is
#: 540,000).
MAX_TABLE_ROWS = 20_000_000
#: Runs of one score table (each is a block of printed rows).
MAX_TABLE_RUNS = 2_000
#: Keys of a `bench check` baseline (DreamBench's full protocol has 18,000) and its size on disk.
MAX_BASELINE_KEYS = 1_000_000
MAX_BASELINE_BYTES = 256 * 2**20
#: Subjects and seeds a `bench power` grid may ask for (each is one printed row / column).
MAX_POWER_DESIGN = 1_000_000
MAX_POWER_GRID = 400
#: (subject, prompt) cells x resamples of the two-way bootstrap (--resample subject+prompt):
#: DreamBench's 750 cells x 2,000 resamples is 1.5 million.
MAX_TWO_WAY_WORK = 2_000_000_000

# agreement with people (issue 28) ---------------------------------------------------------------
#: Items x distinct values squared of one Krippendorff's alpha (`bench agree`): the package builds
#: a values x values coincidence matrix per item, so this many float64 cells (times about five
#: temporaries) are held at once, and it takes about a second per ten million. DreamBench++'s
#: pooled items with a continuous metric (about 9,450 items x 46 values squared) are 2e7;
#: ImagenHub's largest task 1,611 x 69 squared, 8e6.
MAX_ALPHA_CELLS = 50_000_000

# judge (issue 27/32) -------------------------------------------------------------------------
# The served judge (docs/judge.md): every wait on an endpoint is bounded, and said when hit.
#: Total seconds one request to a judge endpoint may take (connect, send, every byte of the reply):
#: the default of judge.timeout_s, and its upper bound. A server that drips a byte every few
#: seconds is cut here, not after each read's own timeout.
JUDGE_REQUEST_DEADLINE_S = 120.0
JUDGE_MAX_REQUEST_DEADLINE_S = 3600.0
#: Tries of a request after a transport fault (HTTP 5xx or 429, a reply that is not JSON, a reset):
#: the default of judge.retries, and its bound.
JUDGE_RETRIES = 4
JUDGE_MAX_RETRIES = 10
#: A server's Retry-After is obeyed up to this many seconds (longer asks are capped, and the
#: error line says so); the waits of one request together stay under JUDGE_MAX_RETRY_WAIT_S.
JUDGE_MAX_RETRY_AFTER_S = 30.0
JUDGE_MAX_RETRY_WAIT_S = 60.0
#: Concurrent requests of one scoring pass (judge.concurrency; vLLM batches them server-side).
JUDGE_MAX_CONCURRENCY = 64
#: judge.repeats and judge.attempts (the release uses 3 and 3).
JUDGE_MAX_REPEATS = 10
JUDGE_MAX_ATTEMPTS = 10
#: judge.max_new_tokens (the release's judge answers in a few hundred tokens).
JUDGE_MAX_NEW_TOKENS = 16_384
#: Bytes read from one endpoint reply (an answer is a few KiB).
JUDGE_MAX_RESPONSE_BYTES = 16 * 2**20
#: When the first this-many answered requests of a pass were all rejected (HTTP 400/413/422, a
#: redirect) and none succeeded, the endpoint rejects everything (a wrong model name): stop.
JUDGE_FIRST_REJECTS = 3
#: bench arena: runs compared at once (every pair is judged: runs x (runs - 1) / 2 pairs).
ARENA_MAX_RUNS = 12
#: bench arena: questions in one arena (pairs x shared images x 2 questions x 2 orders; the
#: DreamBench++ release size, 1,350 images, gives 5,400 per pair of runs).
ARENA_MAX_QUESTIONS = 500_000
#: bench arena --resamples (each replicate refits the ratings: a few ms).
ARENA_MAX_RESAMPLES = 20_000


def clip_text(text: str, limit: int = MAX_TOKENIZER_CHARS) -> str:
    """At most the first ``limit`` characters of ``text`` (whitespace runs collapsed when it is
    longer): what a tokenizer that truncates at 77 tokens can ever keep, cut before tokenizing,
    so a 10 MB prompt costs microseconds, not minutes. Short texts are returned unchanged."""
    if len(text) <= limit:
        return text
    return " ".join(text[:limit * 8].split())[:limit]


def check_template(template: str, fields: frozenset[str] | set[str], where: str) -> str:
    """Refuse a format template (a prompt with ``{}`` fields) that could do more than insert
    the given fields: a field not in ``fields`` (``{2}``, ``{0.attr}``, ``{0[9]}``), a
    conversion (``{0!r}``) or a format spec (``{1:>1000000000}`` would build a gigabyte string),
    or a template longer than MAX_PROMPT_CHARS. ``where`` names the file and line (or the option)
    in the one-line error. Returns the template."""
    import string

    from bench import BenchError

    if not isinstance(template, str):
        raise BenchError(f"{where}: expected a text template, got {template!r}")
    if len(template) > MAX_PROMPT_CHARS:
        raise BenchError(f"{where}: the prompt template has {len(template)} characters, more than the "
                         f"limit of {MAX_PROMPT_CHARS} (bench.limits.MAX_PROMPT_CHARS)")
    shown = template if len(template) <= 80 else template[:77] + "..."
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise BenchError(f"{where}: malformed prompt template {shown!r} ({exc}; write {{{{ and }}}} for "
                         "literal braces)") from None
    allowed = ", ".join("{" + f + "}" for f in sorted(fields)) or "none"
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in fields:
            raise BenchError(f"{where}: prompt template {shown!r} has the field {{{field}}}; allowed fields: "
                             f"{allowed}")
        if spec or conversion:
            raise BenchError(f"{where}: prompt template {shown!r} has a format spec or conversion in "
                             f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}; "
                             f"write the plain field ({allowed})")
    return template


def template_fields(template: str) -> frozenset[str]:
    """The field names a (trusted) template uses, e.g. ``{""}`` for ``"a photo of a {}."``."""
    import string

    return frozenset(f for _, f, _, _ in string.Formatter().parse(template) if f is not None)


def reason(exc: BaseException, limit: int = MAX_REASON_CHARS) -> str:
    """A library exception's message as one line for our errors: whitespace collapsed, whole
    when it fits, else cut at the last sentence end (or word) before ``limit`` and marked
    ``[...]``: never a sentence cut off mid-word."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    return (text[:cut + 1] if cut > 0 else text[:max(text.rfind(" ", 0, limit), 1)]) + " [...]"

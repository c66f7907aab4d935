"""Parsing of model completions: think/answer blocks, detection box lists, single boxes, classes.

Model output is untrusted text. Everything here parses with :mod:`json` or
:func:`ast.literal_eval` (never ``eval``), bounds the input size, and turns anything malformed
into a value the rewards can score (an invalid box, ``None``), never an exception.

>>> extract_answer("<think>a dog</think> <answer>[{'Position': [1, 2, 30, 40], 'Confidence': 0.8}]</answer>")
"[{'Position': [1, 2, 30, 40], 'Confidence': 0.8}]"
>>> parse_detections("[{'Position': [1, 2, 30, 40], 'Confidence': 0.8}]")
DetectionAnswer(no_objects=False, boxes=[PredictedBox(box=(1.0, 2.0, 30.0, 40.0), confidence=0.8, valid=True)], parsed=True)
>>> parse_detections("No Objects").no_objects
True
>>> parse_single_box("(10,20),(110,220)")
(10.0, 20.0, 110.0, 220.0)
"""

from __future__ import annotations

import ast
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Completions far beyond 256 (train) / 1024 (eval) tokens are garbage; bounding the text keeps the
# parsers fast and memory-safe on adversarial input: every function here looks at no more than
# this many characters, and every scan is linear in them (no regex that can backtrack
# quadratically: tags are found with str.find). 10 000 boxes fit comfortably.
MAX_ANSWER_CHARS = 1_000_000
# Keys accepted for a box and its confidence; the paper's prompt asks for Position/Confidence,
# Qwen2.5-VL's native grounding format is bbox_2d.
BOX_KEYS = ("position", "bbox_2d", "bbox", "box")
CONFIDENCE_KEYS = ("confidence", "score", "conf")

_TAG = re.compile(r"</?(?:think|answer)>")
_FENCE_LANGUAGE = re.compile(r"[a-zA-Z0-9_-]*")
_NO_OBJECTS = re.compile(
    r"\A['\"]? ?no objects? ?['\"]? ?[.!]?\Z", re.IGNORECASE
)  # on whitespace-collapsed text
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_POINT_PAIR = re.compile(
    rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,?\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)"
)


def completion_text(completion: Any) -> str:
    """The assistant text of one completion: a string, or trl's conversational form.

    >>> completion_text([{"role": "assistant", "content": "<answer>cat</answer>"}])
    '<answer>cat</answer>'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    >>> completion_text(None)
    ''
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content", completion.get("text", "")))
    if isinstance(completion, (list, tuple)):
        parts = []
        for message in completion:
            if isinstance(message, dict):
                if message.get("role", "assistant") != "assistant" and "text" not in message:
                    continue
                if message.get("type") == "text":
                    parts.append(str(message.get("text", "")))
                else:
                    parts.append(completion_text(message.get("content", "")))
            elif isinstance(message, str):
                parts.append(message)
        return "".join(parts)
    return str(completion)


def _blocks(text: str, open_tag: str, close_tag: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the content of each ``open_tag ... close_tag`` block, left to right, as
    a non-greedy regex would find them, in one linear pass (a regex rescans to the end of the text
    from every unclosed opening tag: quadratic)."""
    blocks = []
    pos = 0
    while (start := text.find(open_tag, pos)) >= 0:
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:  # no closing tag after this one, so none after any later opening tag either
            break
        blocks.append((start + len(open_tag), end))
        pos = end + len(close_tag)
    return blocks


def is_well_formed(text: str) -> bool:
    """The format contract: exactly one ``<think>`` block, then exactly one ``<answer>`` block.

    Whitespace around and between the blocks is allowed; anything else (text outside, a second
    block, a tag inside a block, a missing block) is not. Texts longer than
    :data:`MAX_ANSWER_CHARS` are not well formed.

    >>> is_well_formed("<think>round, red</think>\\n<answer>apple</answer>")
    True
    >>> is_well_formed("<think>x</think><answer>a</answer><answer>b</answer>")
    False
    >>> is_well_formed("<think>x</think><answer>a</answer> trailing")
    False
    """
    if len(text) > MAX_ANSWER_CHARS:
        return False
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    think_end = text.find("</think>", len("<think>"))
    if think_end < 0:
        return False
    rest = text[think_end + len("</think>") :].lstrip()
    if not rest.startswith("<answer>") or len(rest) < len("<answer></answer>"):
        return False
    think = text[len("<think>") : think_end]
    answer = rest[len("<answer>") : -len("</answer>")]
    return not (_TAG.search(think) or _TAG.search(answer))


def extract_answer(text: str) -> str | None:
    """The content of the last ``<answer>…</answer>`` block, stripped; ``None`` if there is none
    (or the text is longer than :data:`MAX_ANSWER_CHARS`).

    The last block is taken because models that restate the format before answering put the real
    answer last; the format reward separately scores 0 for more than one block.

    >>> extract_answer("<answer> 42 </answer>")
    '42'
    >>> extract_answer("no tags") is None
    True
    """
    if len(text) > MAX_ANSWER_CHARS:
        return None
    blocks = _blocks(text, "<answer>", "</answer>")
    if not blocks:
        return None
    start, end = blocks[-1]
    return text[start:end].strip()


def _strip_fence(text: str) -> str:
    """The inside of a Markdown code fence (```json ... ```), or the stripped text."""
    text = text.strip()
    if len(text) < 6 or not (text.startswith("```") and text.endswith("```")):
        return text
    inner = text[3:-3]
    language = _FENCE_LANGUAGE.match(inner)
    return inner[language.end() if language else 0 :].strip()


def parse_literal(text: str) -> Any:
    """JSON, or failing that a Python literal (single quotes); ``None`` if neither parses.

    >>> parse_literal('[1, 2]'), parse_literal("{'a': 1}"), parse_literal("print(1)")
    ([1, 2], {'a': 1}, None)
    """
    if len(text) > MAX_ANSWER_CHARS:
        return None
    text = _strip_fence(text)
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError):
            continue
    return None


def as_float(value: Any) -> float | None:
    """A finite float from an int/float (not bool, not str); ``None`` otherwise.

    >>> as_float(3), as_float(2.5), as_float("3"), as_float(True), as_float(float("nan"))
    (3.0, 2.5, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def as_box(value: Any) -> tuple[float, float, float, float] | None:
    """A valid ``(x1, y1, x2, y2)`` with finite numbers and ``x2 > x1``, ``y2 > y1``; else ``None``.

    >>> as_box([0, 0, 10, 10]), as_box([10, 0, 5, 10]), as_box([0, 0, "10", 10]), as_box([1, 2, 3])
    ((0.0, 0.0, 10.0, 10.0), None, None, None)
    """
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    numbers = [as_float(v) for v in value]
    if any(n is None for n in numbers):
        return None
    x1, y1, x2, y2 = numbers  # type: ignore[misc]
    if not (x2 > x1 and y2 > y1):
        return None
    return (x1, y1, x2, y2)


def _lookup(item: dict, keys: Sequence[str]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in item.items()}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


@dataclass(frozen=True)
class PredictedBox:
    """One predicted box. Invalid ones (bad coordinates or confidence) are scored as unmatched
    predictions with confidence 1, the worst case, so malformed output can never earn reward."""

    box: tuple[float, float, float, float] | None
    confidence: float
    valid: bool


@dataclass
class DetectionAnswer:
    """A parsed detection answer: "No Objects", a list of boxes, or unparsable (``parsed=False``)."""

    no_objects: bool = False
    boxes: list[PredictedBox] = field(default_factory=list)
    parsed: bool = True


INVALID_BOX = PredictedBox(box=None, confidence=1.0, valid=False)


def _predicted_box(item: Any) -> PredictedBox:
    if not isinstance(item, dict):
        return INVALID_BOX
    box = as_box(_lookup(item, BOX_KEYS))
    confidence = as_float(_lookup(item, CONFIDENCE_KEYS))
    if box is None or confidence is None:
        return INVALID_BOX
    return PredictedBox(box=box, confidence=min(1.0, max(0.0, confidence)), valid=True)


def _outer_list(text: str) -> str | None:
    start, end = text.find("["), text.rfind("]")
    return text[start : end + 1] if 0 <= start < end else None


def parse_detections(answer: str | None) -> DetectionAnswer:
    """Parse a detection answer into boxes with confidences.

    Accepts JSON or Python-literal quoting, a single dict instead of a list, code fences, and
    surrounding prose around the list. Exact duplicate boxes are dropped (first kept). An empty
    list means no objects.

    >>> a = parse_detections('[{"Position": [0, 0, 5, 5], "Confidence": 2}, {"Position": [0, 0, 5, 5], "Confidence": 0.1}]')
    >>> [(b.box, b.confidence) for b in a.boxes]
    [((0.0, 0.0, 5.0, 5.0), 1.0)]
    >>> parse_detections("[{'Position': [5, 0, 1, 5], 'Confidence': 0.5}]").boxes[0].valid
    False
    >>> parse_detections("[{'Position': [0, 0, 5").parsed
    False
    """
    if answer is None:
        return DetectionAnswer(parsed=False)
    if len(answer) > MAX_ANSWER_CHARS:
        return DetectionAnswer(parsed=False)
    text = answer.strip()
    if len(text) <= 64 and _NO_OBJECTS.match(" ".join(text.split())):
        return DetectionAnswer(no_objects=True)
    data = parse_literal(text)
    if data is None:
        inner = _outer_list(text)
        data = parse_literal(inner) if inner is not None else None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        return DetectionAnswer(parsed=False)
    if len(data) == 0:
        return DetectionAnswer(no_objects=True)
    boxes: list[PredictedBox] = []
    seen: set[tuple[float, float, float, float]] = set()
    for item in data:
        predicted = _predicted_box(item)
        if predicted.valid:
            assert predicted.box is not None
            if predicted.box in seen:
                continue
            seen.add(predicted.box)
        boxes.append(predicted)
    return DetectionAnswer(boxes=boxes)


def parse_single_box(answer: str | None) -> tuple[float, float, float, float] | None:
    """One box for grounding: ``[x1,y1,x2,y2]``, ``[[...]]``, a dict with a box key, or LISA's
    ``(x1,y1),(x2,y2)``. ``None`` when no valid box is found.

    >>> parse_single_box("[10, 20, 30, 40]")
    (10.0, 20.0, 30.0, 40.0)
    >>> parse_single_box('{"bbox_2d": [1, 2, 3, 4], "label": "cup"}')
    (1.0, 2.0, 3.0, 4.0)
    >>> parse_single_box("[[1, 2, 3, 4]]"), parse_single_box("the cup") is None
    ((1.0, 2.0, 3.0, 4.0), True)
    """
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return None
    text = answer.strip()
    pair = _POINT_PAIR.search(text)
    if pair is not None:
        return as_box([float(v) for v in pair.groups()])
    data = parse_literal(text)
    if data is None:
        inner = _outer_list(text)
        data = parse_literal(inner) if inner is not None else None
    for _ in range(2):  # unwrap [[...]] or [{...}] once
        if isinstance(data, (list, tuple)) and len(data) == 1:
            data = data[0]
    if isinstance(data, dict):
        data = _lookup(data, BOX_KEYS)
    return as_box(data)


_INTEGER_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)")


def first_integer_pair_box(text: str | None) -> tuple[float, float, float, float] | None:
    """The first ``(x1,y1),(x2,y2)`` of non-negative integers anywhere in ``text`` (think block
    included), as the authors' LISA evaluation reads a completion; ``None`` if there is none or the box
    is empty.

    >>> first_integer_pair_box("<think>(1,2),(3,4) maybe</think><answer>(10,20),(30,40)</answer>")
    (1.0, 2.0, 3.0, 4.0)
    >>> first_integer_pair_box("<answer>(1.5,2),(3,4)</answer>") is None
    True
    """
    if text is None or len(text) > MAX_ANSWER_CHARS:
        return None
    match = _INTEGER_PAIR.search(text)
    return as_box([float(v) for v in match.groups()]) if match else None


_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def fold_unicode(text: str) -> str:
    """NFKC (full-width ``ｃａｔ`` -> ``cat``, ligatures, compatibility forms) without the invisible
    format characters (zero-width space and joiners, soft hyphen, BOM, bidi marks: category Cf),
    so that text which looks the same compares the same.

    >>> fold_unicode("ｃａｔ"), fold_unicode("ca\u200bt"), fold_unicode("\ufeffdog\u00ad")
    ('cat', 'cat', 'dog')
    """
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalize_label(text: str) -> str:
    """Fold Unicode forms (:func:`fold_unicode`), case, underscores, hyphens, punctuation and runs
    of spaces, for exact class matching.

    >>> normalize_label("  Boeing_737-800. ")
    'boeing 737 800'
    >>> normalize_label("Pink Primrose"), normalize_label("Ｐｉｎｋ\u200b Primrose")
    ('pink primrose', 'pink primrose')
    """
    return " ".join(_PUNCT.sub(" ", fold_unicode(text).casefold()).split())


def labels_match(answer: str | None, class_name: str, aliases: Iterable[str] | None = None) -> bool:
    """Exact normalised match with the class name or an alias. No substring test: an empty answer
    or a list of classes is wrong.

    >>> labels_match("boeing_737", "Boeing 737"), labels_match("Boeing 737 or Airbus A320", "Boeing 737")
    (True, False)
    >>> labels_match("", "cat"), labels_match("Tom cat", "cat", aliases=["tom cat"])
    (False, True)
    """
    if answer is None:
        return False
    normalized = normalize_label(answer)
    if not normalized:
        return False
    candidates = [class_name, *(aliases or [])]
    return any(normalized == normalize_label(c) for c in candidates if isinstance(c, str) and c.strip())


_WHITESPACE = re.compile(r"\s*")
_LEADING_WORD = re.compile(r"[^\w]*([^\W\d_]+)")


def parse_yes_no(answer: str | None) -> bool | None:
    """The existence answer from its leading word: ``True`` for yes, ``False`` for no, ``None`` if
    neither. Models answer in sentences ("Yes, there is a stop sign."), so only the first word
    counts; "Yesterday" or "Not sure" are neither.

    >>> parse_yes_no(" Yes."), parse_yes_no("no"), parse_yes_no("maybe")
    (True, False, None)
    >>> parse_yes_no("Yes, there is a stop sign."), parse_yes_no("No objects."), parse_yes_no("Not sure")
    (True, False, None)
    """
    if answer is None:
        return None
    match = _LEADING_WORD.match(fold_unicode(answer[:256]))  # the first word is all that counts
    word = match.group(1).casefold() if match else ""
    if word in ("yes", "true", "present"):
        return True
    if word in ("no", "false", "absent"):
        return False
    return None


# -- the authors' classification rules (grpo_classification.py and their evaluation script) ---------


def first_line_answer(text: str) -> str | None:
    """The content of the first ``<answer>…</answer>`` block that opens and closes on one line, as
    the authors' ``re.search(r"<answer>(.*?)</answer>", text)`` finds it; ``None`` if there is none.

    Linear in the text (the regex is quadratic on a line of unclosed ``<answer>`` tags): on each line
    only the first opening tag can start a match, since a closing tag after a later one also follows it.

    >>> first_line_answer("<think>a</think><answer>Boeing 737</answer>"), first_line_answer("737-800")
    ('Boeing 737', None)
    >>> first_line_answer("<answer>Pink\\nPrimrose</answer> <answer>rose</answer>")
    'rose'
    """
    if len(text) > MAX_ANSWER_CHARS:
        return None
    position = 0
    while (start := text.find("<answer>", position)) >= 0:
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        end = text.find("</answer>", start + len("<answer>"), line_end)
        if end >= 0:
            return text[start + len("<answer>") : end]
        position = line_end + 1
    return None


def squash_label(text: str) -> str:
    """The authors' normalisation: spaces and underscores removed, lower case.

    >>> squash_label("American_Pit Bull")
    'americanpitbull'
    """
    return text.replace(" ", "").replace("_", "").lower()


def contains_either_way(answer: str, class_name: str) -> bool:
    """The authors' accuracy test: after :func:`squash_label`, either string contains the other. An
    empty answer is contained in every class name, so it is right; so is a list of every class.

    >>> contains_either_way("Boeing 737-800", "737-800"), contains_either_way("", "cat")
    (True, True)
    >>> contains_either_way("Airbus A320", "737-800")
    False
    """
    truth, said = squash_label(class_name), squash_label(answer)
    return truth in said or said in truth


def authors_well_formed(text: str) -> bool:
    """The authors' format reward: ``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>",
    text, re.DOTALL)``, computed in linear time. Laxer than :func:`is_well_formed`: the text is not
    stripped, and tags inside the blocks (a second answer block) are allowed.

    >>> authors_well_formed("<think>x</think>\\n<answer>a</answer><answer>b</answer>")
    True
    >>> authors_well_formed(" <think>x</think><answer>a</answer>"), authors_well_formed("<think>x</think>")
    (False, False)
    """
    if len(text) > MAX_ANSWER_CHARS or not text.startswith("<think>") or not text.endswith("</answer>"):
        return False
    # The earliest "</think>" + whitespace + "<answer>" leaves the most room before the final
    # "</answer>"; if it leaves none, no later one does.
    position = len("<think>")
    limit = len(text) - len("</answer>")
    while (close := text.find("</think>", position)) >= 0:
        opening = _WHITESPACE.match(text, close + len("</think>")).end()  # type: ignore[union-attr]
        if text.startswith("<answer>", opening):
            return opening + len("<answer>") <= limit
        position = close + 1
    return False

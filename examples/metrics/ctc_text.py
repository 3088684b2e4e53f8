"""Task-level agreement of a CTC text recognizer with its FP32 self: the decoded strings.

Two custom metrics over a ``[N, T, classes]`` output (softmax or logits; class 0 is the CTC blank, as in
PP-OCR)::

    precision-lab sweep rec.onnx --data lines/ --metric examples/metrics/ctc_text.py:exact_match \
        --metric-direction higher --tolerance 0.95
    precision-lab sweep rec.onnx --data lines/ --metric examples/metrics/ctc_text.py:character_error_rate \
        --metric-direction lower --tolerance 0.02

Greedy CTC decoding (PP-OCR's ``CTCLabelDecode``): the best class per time step, repeats collapsed, blanks
dropped. Strings are compared as sequences of class ids, which is the same as comparing the characters they
stand for. Both functions return one value per sample.
"""

from __future__ import annotations

import numpy as np

BLANK = 0


def greedy_decode(prediction: np.ndarray, blank: int = BLANK) -> list[int]:
    """Class ids of one sample's ``[T, classes]`` prediction: argmax per step, repeats collapsed, blanks dropped."""
    best = np.asarray(prediction).argmax(axis=-1)
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(c) for c in best[keep] if c != blank]


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance between two sequences."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _pairs(outputs: dict, reference: dict):
    name = next(iter(outputs))
    y, r = np.asarray(outputs[name]), np.asarray(reference[name])
    return [(greedy_decode(y[i]), greedy_decode(r[i])) for i in range(y.shape[0])]


def exact_match(outputs: dict, reference: dict) -> np.ndarray:
    """Per sample, 1.0 when the decoded string equals the FP32 model's, else 0.0 (higher is better)."""
    return np.array([float(a == b) for a, b in _pairs(outputs, reference)])


def character_error_rate(outputs: dict, reference: dict) -> np.ndarray:
    """Per sample, the edit distance to the FP32 model's string over its length (lower is better; an empty FP32
    string counts each decoded character as an error)."""
    return np.array([edit_distance(a, b) / max(1, len(b)) for a, b in _pairs(outputs, reference)])

"""Task-level agreement of a YOLOv8 detector with its FP32 self: F1 of the detections.

Use it as a custom metric (higher is better; the FP32 model scores 1.0)::

    precision-lab sweep yolov8n.onnx --data photos/ \
        --metric examples/metrics/detection_f1.py:detection_f1 --metric-direction higher --tolerance 0.9

For each sample, both outputs are decoded the way Ultralytics YOLOv8 heads are (``[N, 4 + classes, anchors]``:
box centre x, y, width, height in pixels, then class scores in 0..1): detections are the anchors whose best
class score reaches ``CONFIDENCE``, thinned by per-class non-maximum suppression at ``NMS_IOU``. The INT8
detections are then matched greedily, highest score first, to FP32 detections of the same class with IoU >=
``MATCH_IOU``; F1 = 2·matches / (INT8 detections + FP32 detections), 1.0 when both are empty. The function
returns one F1 per sample, so ``--criterion`` and the confidence interval work on it.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.25  # nudenet's and Ultralytics' default score threshold
NMS_IOU = 0.45  # Ultralytics' default NMS IoU (nudenet: cv2.dnn.NMSBoxes(..., 0.25, 0.45))
MATCH_IOU = 0.5


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[x1, y1, x2, y2]`` box with each row of ``boxes``."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def decode(prediction: np.ndarray, confidence: float = CONFIDENCE, nms_iou: float = NMS_IOU):
    """Detections of one sample's ``[4 + classes, anchors]`` prediction: ``(boxes xyxy, classes, scores)``,
    highest score first, after per-class NMS."""
    prediction = np.asarray(prediction, dtype=np.float64)
    scores_all = prediction[4:].T
    classes = scores_all.argmax(axis=1)
    scores = scores_all.max(axis=1)
    keep = scores >= confidence
    cx, cy, w, h = prediction[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    classes, scores = classes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    boxes, classes, scores = boxes[order], classes[order], scores[order]
    selected = []
    suppressed = np.zeros(len(scores), dtype=bool)
    for i in range(len(scores)):
        if suppressed[i]:
            continue
        selected.append(i)
        same = (classes == classes[i]) & ~suppressed
        same[: i + 1] = False
        suppressed |= same & (iou(boxes[i], boxes) > nms_iou)
    return boxes[selected], classes[selected], scores[selected]


def f1(detections, reference, match_iou: float = MATCH_IOU) -> float:
    """F1 of ``detections`` against ``reference`` detections (same class, IoU >= ``match_iou``, greedy)."""
    boxes, classes, _ = detections
    ref_boxes, ref_classes, _ = reference
    if len(boxes) == 0 and len(ref_boxes) == 0:
        return 1.0
    used = np.zeros(len(ref_boxes), dtype=bool)
    matches = 0
    for box, cls in zip(boxes, classes):
        candidates = (ref_classes == cls) & ~used
        if not candidates.any():
            continue
        overlaps = np.where(candidates, iou(box, ref_boxes), -1.0)
        best = int(overlaps.argmax())
        if overlaps[best] >= match_iou:
            used[best] = True
            matches += 1
    return 2.0 * matches / (len(boxes) + len(ref_boxes))


def detection_f1(outputs: dict, reference: dict) -> np.ndarray:
    """Per-sample F1 of the model's detections against the FP32 model's (first output, ``[N, 4 + C, A]``)."""
    name = next(iter(outputs))
    y, r = np.asarray(outputs[name]), np.asarray(reference[name])
    return np.array([f1(decode(y[i]), decode(r[i])) for i in range(y.shape[0])])

"""A plan: the precision each candidate layer runs at.

:class:`PrecisionPlan` is the one value that search strategies propose, the Q/DQ builder applies, executors ship
to workers, the journal keys, and results, ``plan.json``, ``apply`` and the report show. A layer it does not
name runs INT8. With the default levels (``int8,fp32``) a plan is just its set of FP32 layers, and its journal
key is the one binary plans always had.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

__all__ = ["INT8", "FP16", "FP32", "PRECISIONS", "PrecisionPlan", "Level", "BINARY"]

INT8, FP16, FP32 = "int8", "fp16", "fp32"
PRECISIONS = (INT8, FP16, FP32)  # from lowest to highest


class PrecisionPlan(Mapping[str, str]):
    """An immutable mapping layer -> precision (``"int8"``, ``"fp16"`` or ``"fp32"``) of the layers that do not
    run INT8; every layer it does not name runs INT8. Hashable, comparable, picklable."""

    __slots__ = ("_map", "_items")

    def __init__(self, precisions: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        items = dict(precisions.items() if isinstance(precisions, Mapping) else precisions)
        bad = {layer: p for layer, p in items.items() if p not in PRECISIONS}
        if bad:
            raise ValueError(f"unknown precisions {bad}; choose from {PRECISIONS}")
        self._map = {layer: p for layer, p in items.items() if p != INT8}
        self._items = frozenset(self._map.items())

    @classmethod
    def fp32(cls, layers: Iterable[str]) -> PrecisionPlan:
        """The binary plan that keeps ``layers`` FP32 (everything else INT8)."""
        return cls((layer, FP32) for layer in layers)

    @classmethod
    def of(cls, plan: PrecisionPlan | Mapping[str, str] | Iterable[str]) -> PrecisionPlan:
        """``plan`` as a :class:`PrecisionPlan`: a mapping of precisions, or an iterable of FP32 layer names."""
        if isinstance(plan, PrecisionPlan):
            return plan
        if isinstance(plan, Mapping):
            return cls(plan)
        return cls.fp32(plan)

    # --- Mapping ----------------------------------------------------------------------------------------
    def __getitem__(self, layer: str) -> str:
        return self._map[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._map))

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PrecisionPlan):
            return self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        return f"PrecisionPlan({dict(sorted(self._items))})"

    def __reduce__(self):
        return (PrecisionPlan, (dict(self._map),))

    # --- views ------------------------------------------------------------------------------------------
    def precision(self, layer: str) -> str:
        """The precision of ``layer`` (``"int8"`` unless the plan names it)."""
        return self.get(layer, INT8)

    def layers_at(self, precision: str) -> frozenset[str]:
        """The layers the plan puts at ``precision`` (``"int8"`` is never named: use the candidates)."""
        return frozenset(layer for layer, p in self._items if p == precision)

    @property
    def fp32_layers(self) -> frozenset[str]:
        return self.layers_at(FP32)

    @property
    def fp16_layers(self) -> frozenset[str]:
        return self.layers_at(FP16)

    @property
    def high_precision(self) -> frozenset[str]:
        """Every layer the plan keeps out of INT8."""
        return frozenset(layer for layer, _ in self._items)

    @property
    def is_binary(self) -> bool:
        """Whether every named layer is FP32 (an INT8/FP32 plan)."""
        return all(p == FP32 for _, p in self._items)

    def with_precision(self, layers: Iterable[str], precision: str) -> PrecisionPlan:
        """This plan with ``layers`` set to ``precision``."""
        items = dict(self._map)
        items.update((layer, precision) for layer in layers)
        return PrecisionPlan(items)

    def key_material(self) -> list:
        """What the journal key hashes: the sorted FP32 layer names for a binary plan (the key binary plans
        always had), else the sorted ``[layer, precision]`` pairs."""
        if self.is_binary:
            return sorted(self.fp32_layers)
        return sorted([layer, p] for layer, p in self._items)

    def to_json(self) -> dict[str, str]:
        return dict(sorted(self._items))


@dataclass(frozen=True)
class Level:
    """One step of a search: layers it pins go from ``base`` up to ``raised`` precision."""

    raised: str = FP32
    base: str = INT8

    def apply(self, start: PrecisionPlan, layers: Iterable[str]) -> PrecisionPlan:
        """``start`` with ``layers`` raised to this level's precision."""
        return start.with_precision(layers, self.raised)


BINARY = Level(FP32, INT8)

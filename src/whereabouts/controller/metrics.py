"""Prometheus metrics of the long-running processes, kept by prometheus_client: constant memory per series (a
histogram keeps its bucket counts, never its observations) and its own text exposition.

What this module adds to it: the `whereabouts_` prefix, labels passed by keyword, a registry per process
(tests make several), `forget`, which drops the series of pools or networks that are gone, and `on_render`:
what is read rather than counted (a gauge of open stores, a file the CNI executable appends to) is brought up
to date when a scrape asks. Every metric is listed in docs/metrics.md (a test holds the list to the code).
Never imported on the CNI hot path (the controllers, install-cni and the node daemon only).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

# No `_created` series. prometheus_client 0.16 (Debian bookworm's, which the image uses) reads this once, when
# it is imported; newer ones also have disable_created_metrics(), called below.
os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import Histogram as _Histogram

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
_Family = Counter | Gauge | _Histogram


class Metric:
    """One metric family; `labels` are its label names, every update names each of them by keyword."""

    def __init__(self, family: _Family, registry: CollectorRegistry, name: str, labels: tuple[str, ...]) -> None:
        self.family, self.registry, self.name, self.labels = family, registry, name, labels

    def _series(self, labels: dict[str, str]) -> _Family:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes the labels {self.labels}, not {tuple(labels)}")
        return self.family.labels(**labels) if self.labels else self.family

    def inc(self, amount: float = 1, **labels: str) -> None:
        series = self._series(labels)
        assert isinstance(series, Counter | Gauge)
        series.inc(amount)

    def set(self, value: float, **labels: str) -> None:
        series = self._series(labels)
        assert isinstance(series, Gauge)
        series.set(value)

    def value(self, **labels: str) -> float:
        """The series' current value (0 if it has none): a counter's total, a gauge's value."""
        sample = f"{self.name}_total" if isinstance(self.family, Counter) else self.name
        return self.registry.get_sample_value(sample, labels) or 0.0

    def forget(self, keep: Iterable[dict[str, str]]) -> None:
        """Drop the label sets not in `keep` (a pool that was deleted stops being reported)."""
        wanted = {tuple(labels[name] for name in self.labels) for labels in keep}
        for values in self._label_sets() - wanted:
            self.family.remove(*values)

    def _label_sets(self) -> frozenset[tuple[str, ...]]:
        return frozenset(
            tuple(sample.labels[name] for name in self.labels)
            for family in self.family.collect()
            for sample in family.samples
        )


class Histogram(Metric):
    def observe(self, value: float, **labels: str) -> None:
        series = self._series(labels)
        assert isinstance(series, _Histogram)
        series.observe(value)


class Registry:
    def __init__(self) -> None:
        disable = getattr(prometheus_client, "disable_created_metrics", None)  # 0.17 and later
        if disable is not None:
            disable()
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics: dict[str, Metric] = {}  # by the name exposed
        self.refreshers: list[Callable[[], None]] = []
        self.rendering = threading.Lock()  # concurrent scrapes refresh one at a time

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Metric:
        return self._add(name, help_text, labels, Counter)

    def gauge(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Metric:
        return self._add(name, help_text, labels, Gauge)

    def histogram(
        self, name: str, help_text: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = DURATION_BUCKETS
    ) -> Histogram:
        metric = self._add(name, help_text, labels, _Histogram, buckets)
        assert isinstance(metric, Histogram)
        return metric

    def on_render(self, refresh: Callable[[], None]) -> None:
        """Call `refresh` before each exposition (each scrape): it sets what is read, not counted."""
        self.refreshers.append(refresh)

    def _add(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        kind: type[_Family],
        buckets: tuple[float, ...] = DURATION_BUCKETS,
    ) -> Metric:
        """One family per name: a second controller in the process asking for it shares it."""
        exposed = f"whereabouts_{name}"
        if exposed not in self.metrics:
            family_name = exposed.removesuffix("_total") if kind is Counter else exposed  # the library adds it
            if kind is _Histogram:
                histogram = _Histogram(family_name, help_text, labels, registry=self.registry, buckets=buckets)
                self.metrics[exposed] = Histogram(histogram, self.registry, family_name, labels)
            else:
                family = kind(family_name, help_text, labels, registry=self.registry)
                self.metrics[exposed] = Metric(family, self.registry, family_name, labels)
        return self.metrics[exposed]

    def render(self) -> str:
        """The text exposition of every metric."""
        with self.rendering:
            for refresh in self.refreshers:
                refresh()
        return prometheus_client.generate_latest(self.registry).decode()

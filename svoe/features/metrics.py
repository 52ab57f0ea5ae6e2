"""The featurizer's Prometheus series (docs/features.md). Labels: the FeatureSet's name, and the
symbol for rows."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ROWS = Counter("svoe_features_rows", "Feature rows emitted", ["featureset", "symbol"])
LAG = Gauge("svoe_features_lag_seconds", "Wall clock minus the newest emitted tick", ["featureset"])
STALE = Gauge("svoe_features_stale", "1 while the source has sent nothing for staleAfterSeconds", ["featureset"])
SOURCE_EVENTS = Counter("svoe_features_source_events", "Source events received", ["featureset", "channel"])
LATE = Counter("svoe_features_late_events", "Events that arrived after their tick closed", ["featureset"])
SKIPPED = Counter("svoe_features_skipped", "Source messages skipped", ["featureset", "reason"])

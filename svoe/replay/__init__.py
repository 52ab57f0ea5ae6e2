"""A local exchange that replays ../shared/captures to an unmodified cryptofeed client."""

from svoe.replay.capture import (
    REFERENCE_FEED_OPTIONS,
    Capture,
    CaptureError,
    capture_subscription,
    list_capture_exchanges,
    load_capture,
    reference_counts,
)
from svoe.replay.harness import ReplayRun, feed_received, replay_feed
from svoe.replay.sequencing import LoopNotSupported, loopable_exchanges
from svoe.replay.server import ReplayServer

__all__ = [
    "REFERENCE_FEED_OPTIONS",
    "Capture",
    "CaptureError",
    "LoopNotSupported",
    "ReplayRun",
    "ReplayServer",
    "capture_subscription",
    "feed_received",
    "list_capture_exchanges",
    "load_capture",
    "loopable_exchanges",
    "reference_counts",
    "replay_feed",
]

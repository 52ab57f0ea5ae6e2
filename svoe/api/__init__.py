"""The DataFeed API: pydantic models, loading and validation of manifests."""

from svoe.api.datafeed import API_GROUP, API_VERSION, KIND, PLURAL, DataFeed, DataFeedSpec
from svoe.api.load import ManifestError, load_manifest, parse_manifest

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "PLURAL",
    "DataFeed",
    "DataFeedSpec",
    "ManifestError",
    "load_manifest",
    "parse_manifest",
]

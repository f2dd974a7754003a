"""The Data Backbone: a content-addressed file store per site plus the Butler-style registry.

See `client.Backbone` (put/get/find/list), `verify`, `replication` and `distribute`.
"""

from dms.services.backbone.client import Backbone
from dms.services.backbone.registry import DatasetRef

__all__ = ["Backbone", "DatasetRef"]

"""The on-disk contract of a joindet run: table schemas, manifest format, schema version.

Imports no other joindet package.
"""

from joindet.storage_schema.attention import ATTENTION_LAYOUT, ATTENTION_MAX_SIDE
from joindet.storage_schema.manifest import SCHEMA_VERSION, FileEntry, Manifest, ShardMarker, check_schema_version
from joindet.storage_schema.tables import BOXES_SCHEMA, IMAGES_SCHEMA, KINDS, QUARANTINE_SCHEMA
from joindet.storage_schema.validate import (
    SchemaError,
    SchemaVersionError,
    conform,
    validate_boxes_table,
    validate_images_table,
    validate_quarantine_table,
)

__all__ = [
    "ATTENTION_LAYOUT",
    "ATTENTION_MAX_SIDE",
    "BOXES_SCHEMA",
    "FileEntry",
    "IMAGES_SCHEMA",
    "KINDS",
    "Manifest",
    "QUARANTINE_SCHEMA",
    "SCHEMA_VERSION",
    "SchemaError",
    "SchemaVersionError",
    "ShardMarker",
    "check_schema_version",
    "conform",
    "validate_boxes_table",
    "validate_images_table",
    "validate_quarantine_table",
]

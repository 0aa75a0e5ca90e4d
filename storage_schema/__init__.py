"""The on-disk contract of a joindet run: table schemas, manifest format, schema version.

Imports no other joindet package.
"""

from storage_schema.tables import BOXES_SCHEMA, IMAGES_SCHEMA, KINDS, QUARANTINE_SCHEMA

SCHEMA_VERSION = 1

__all__ = ["BOXES_SCHEMA", "IMAGES_SCHEMA", "KINDS", "QUARANTINE_SCHEMA", "SCHEMA_VERSION"]

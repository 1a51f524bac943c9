"""Shared contract of the pipeline: the touchpoint event, journey definitions, settings.

Every stage (ingest, stream, warehouse, api, deploy) imports from here; nothing here
imports a stage.
"""

__version__ = "0.1.0"

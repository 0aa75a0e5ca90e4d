"""joindet: unsupervised object-detection pretraining with jointly mined object priors.

The installed distribution exposes one import namespace. Its sub-packages live in the
repository's top-level folders (``pipeline/``, ``priors/``, ``detector/``, ``flows/``,
``storage_schema/``) and are mapped under ``joindet.`` by pyproject.toml's ``package-dir``:

    joindet.flows  ->  joindet.pipeline  ->  {joindet.detector, joindet.priors}  ->  joindet.storage_schema
"""

__version__ = "0.1.0"

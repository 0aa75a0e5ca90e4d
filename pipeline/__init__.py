"""joindet pipeline: stages as plain typed functions, datasets, transforms, configuration. No Prefect."""

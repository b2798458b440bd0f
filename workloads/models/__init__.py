"""Built-in model catalog: one YAML file per architecture (installed as perfmodel.catalog.models)."""

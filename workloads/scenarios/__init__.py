"""Built-in scenario catalog: one YAML file per decoding method setup (installed as perfmodel.catalog.scenarios)."""

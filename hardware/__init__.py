"""Built-in hardware catalog: one YAML file per device (installed as perfmodel.catalog.hardware)."""

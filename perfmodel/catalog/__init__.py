"""Built-in catalogs (hardware, models, scenarios), mapped from the top-level folders of the source tree."""

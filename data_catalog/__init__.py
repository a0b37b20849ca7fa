"""The data catalog's declaration (``catalog.yml``), shipped as package data so that any install of worldnet finds it."""

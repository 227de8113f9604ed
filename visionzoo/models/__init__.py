"""Model families, one module each. Modules are imported on demand by the registry."""

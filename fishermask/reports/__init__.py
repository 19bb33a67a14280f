"""Reports: tables, curves and an HTML page from a sweep's MLflow runs (``fishermask report``)."""

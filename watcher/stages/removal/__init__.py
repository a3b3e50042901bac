"""Background removal backends. Each is a ``Remover`` (see base.py)."""

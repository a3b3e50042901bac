"""Pipeline stages. Stages never import each other; pipeline.py composes them."""

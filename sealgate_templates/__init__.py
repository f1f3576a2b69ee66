"""Texts a person reads (Jinja2 templates), shipped as a package so installs carry them."""

"""The bubble side of Sealgate: envelopes, keys, the signed directory and relays.

This package never imports `gateway`.
"""

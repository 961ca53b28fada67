"""Chaperone's headless core: consent, capture, the signed journal and the local API.

Nothing in this package imports Qt; it runs on a server with no display.
"""

__version__ = "0.1.0"

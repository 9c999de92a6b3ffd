"""adaexport: export an adaptive AdaPerceiver into a family of static edge engines."""

__version__ = "0.1.0"

"""Restore damaged grayscale photos to colour: mask detection -> inpainting -> colorization.

``pipeline`` chains the stages of the ``stages`` package (never the reverse). Importing it loads
no torch: ``Pipeline`` and the rest load on first use, so a command can start reading its inputs
while torch loads (``python -m pipeline.restore``)."""
import os

# What stages/__init__.py sets and why (libgomp's spin count, read when torch loads); set here too
# because a pipeline module may load torch before stages.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__all__ = ["Pipeline", "Restoration", "resolve_checkpoint"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        import stages  # noqa: F401  (first, as everywhere: see stages/__init__.py)

        from . import pipeline as chain
        return getattr(chain, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

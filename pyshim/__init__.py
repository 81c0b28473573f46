"""Control shim for the per-driver memmap_on_memory setting of dax kmem."""

__version__ = "0.1.0"

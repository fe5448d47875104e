"""kernelevo: language models write GPU kernels; an honest evaluator judges them."""

__version__ = "0.1.0"

__all__ = ["load", "patch", "unpatch"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: `import kernelevo` stays free of torch
    if name == "load":
        from kernelevo.deploy.load import load

        return load
    if name in ("patch", "unpatch"):
        from kernelevo.deploy import patch as _patch

        return getattr(_patch, name)
    raise AttributeError(f"module 'kernelevo' has no attribute {name!r}")

"""kernelevo: language models write GPU kernels; an honest evaluator judges them."""

__version__ = "0.1.0"

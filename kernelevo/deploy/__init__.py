"""The deploy stage: what leaves a run (exported kernels with manifests) and goes into models."""

"""Profiles fed back to the model: compile metadata, roofline fractions, Nsight Compute metrics."""

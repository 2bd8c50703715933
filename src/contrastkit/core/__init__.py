"""The torch-only core: pairing, similarity, temperature, weighting, reduction, validation."""

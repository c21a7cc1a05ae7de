"""Package data (calibration records)."""

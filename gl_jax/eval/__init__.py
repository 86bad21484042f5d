"""Evaluation: sample grids and plots (metrics such as FID arrive with their own modules)."""

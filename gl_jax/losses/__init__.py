"""Pure training objectives, one module per model family."""

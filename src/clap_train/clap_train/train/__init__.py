"""Training runners, one module per stage, sharing the loop and checkpointing in loop.py."""

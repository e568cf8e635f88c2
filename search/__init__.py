"""Command line and study orchestration: `python -m search run|export|report|predict|spaces`."""
import os

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

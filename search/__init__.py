"""Command line and study orchestration: `python -m search run|export|report|predict|spaces`."""
import os
import warnings

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Heartbeats and retries are "experimental" in Optuna's words; they are what we rely on, knowingly.
warnings.filterwarnings("ignore", message=r".*(is experimental|is an experimental feature)")
warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
# Keras on TensorFlow warns about tf.function retracing when each trial builds a new model: expected.
__import__("logging").getLogger("tensorflow").setLevel("ERROR")

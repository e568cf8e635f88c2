"""What a searching process needs around its deep-learning backend and its signals.

Imports nothing heavy: it runs before Keras is imported, so that Keras is imported quietly.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_ROOT = Path(__file__).resolve().parent.parent
_OURS = tuple(_ROOT / package for package in ("search", "spaces", "pneumo_models", "reports"))
_show_warning = warnings.showwarning


def quiet_libraries() -> None:
    """Keep TensorFlow's start-up chatter and Optuna's expected warnings off the terminal; show our own as one line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read when TensorFlow starts
    # Heartbeats and retries are "experimental" in Optuna's words; they are what we rely on, knowingly.
    warnings.filterwarnings("ignore", message=r".*(is experimental|is an experimental feature)")
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    # Keras on TensorFlow warns about tf.function retracing when each trial builds a new model: expected.
    logging.getLogger("tensorflow").setLevel("ERROR")
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings, raised for the command line, read like its other messages: one line,
    ``warning: ...``, with no source path or line of code; everything else as Python shows it."""
    if issubclass(category, UserWarning) and _is_ours(filename):
        print(f"warning: {message}", file=file or sys.stderr, flush=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


def _is_ours(filename: str) -> bool:
    path = Path(filename).resolve()
    return any(path.is_relative_to(package) for package in _OURS)


def import_keras_quietly() -> None:
    """TensorFlow's C++ logger writes start-up lines to fd 2 before any setting can stop it."""
    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def clear_backend_session() -> None:
    """Free the finished trial's graph state (TensorFlow keeps it per process otherwise)."""
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            keras.backend.clear_session()
        except Exception:  # noqa: BLE001 - best effort
            pass
    forget_traced_gradients()


def forget_traced_gradients() -> int:
    """Drop the gradient functions TensorFlow registered while tracing finished trials; return how many.

    Keras' TensorFlow train step all-reduces through ``tf.distribute``, which defines a custom
    gradient; traced in a graph, each one is registered as ``CustomGradient-<n>`` in a registry
    for the whole process that TensorFlow never empties, and its closure holds the whole traced
    train step (every graph, op and tensor of it). ``keras.backend.clear_session`` leaves them, so
    a search process grew by 30-80 MB per trial (keras-team/keras#17458; 6.6 GB after a full default
    Kermany run; benchmarks/trial_memory.py). They are read only while a graph that calls them is being
    differentiated, which happens while its train step is traced (a retrace registers new ones), so
    a network traced before goes on training; only differentiating an old traced graph anew would miss them."""
    ops = sys.modules.get("tensorflow.python.framework.ops")
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):  # TensorFlow not loaded (PyTorch, JAX) or its internals moved
        return 0
    names = [name for name in registry if name.startswith("CustomGradient-")]
    for name in names:
        del registry[name]
    return len(names)


def free_accelerator_memory() -> None:
    """After an out-of-memory failure: hand cached GPU memory back (PyTorch keeps it otherwise)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort after a failure
            pass


_terms: list[int] = []  # SIGTERMs received inside ``sigterm_as_interrupt``


def _raise_interrupt(signum, frame):
    _terms.append(signum)
    raise KeyboardInterrupt


def raise_if_terminated() -> None:
    """Raise KeyboardInterrupt again for a SIGTERM whose first one was lost: Python drops an
    exception raised while a ``__del__`` runs (TensorFlow frees functions that way), so search
    loops call this before each trial."""
    if _terms:
        raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM stops the process like Ctrl-C, so the trial in flight is failed
    as ``interrupted``, finished trials are kept and the run can resume. (Only the main thread
    may set a handler: elsewhere, as in a notebook's worker thread, the block changes nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _terms.clear()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _terms.clear()

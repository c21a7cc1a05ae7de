"""Device resolution and memory figures shared by the library, the scripts and every command of the CLI."""

from __future__ import annotations

import torch

__all__ = ["peak_memory", "resolve_device"]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` a user asked for, checked against the hardware.

    Parameters
    ----------
    spec : str or torch.device or None
        ``"auto"`` (or None): CUDA device 0 when CUDA is available, else the CPU. Otherwise any device string torch
        accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...).

    Raises
    ------
    ValueError
        One line naming the problem: an unknown device string, CUDA asked for where there is none, or a CUDA index
        beyond the devices present.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    ValueError: unknown device 'tpu': use auto, cpu, cuda or cuda:N (any device string torch accepts)
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(spec, torch.device):
        dev = spec
    else:
        text = str(spec).strip().lower()
        try:
            dev = torch.device(text)
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N "
                             "(any device string torch accepts)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} was asked for but no CUDA device is available "
                             "(use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r}: only {torch.cuda.device_count()} CUDA device(s) are available")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {str(dev)!r} was asked for but MPS is not available (use cpu or auto)")
    elif dev.type != "cpu":
        raise ValueError(f"device {str(dev)!r} is not supported by invprob: use auto, cpu, cuda or cuda:N")
    return dev


def peak_memory(device: str | torch.device | None = None) -> dict[str, float | None]:
    """This process's peak memory so far, in MB: resident set (``getrusage``'s ``ru_maxrss``; None where the
    ``resource`` module does not exist) and, for a CUDA ``device``, torch's peak allocated CUDA memory.

    The resident set includes what the libraries themselves occupy (torch's CUDA build alone is about 0.7 GB).

    Examples
    --------
    >>> peak_memory("cpu")["peak_rss_mb"] > 0
    True
    """
    try:
        import resource
    except ImportError:  # not on Windows
        rss = None
    else:
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        rss = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    cuda = None
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        cuda = torch.cuda.max_memory_allocated(dev) / 2**20
    return {"peak_rss_mb": rss, "cuda_peak_mb": cuda}

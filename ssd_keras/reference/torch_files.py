"""Reading PyTorch weight files (`.pth` / `.pt`), the one place outside the lesson's code that
needs torch; `ssd_keras.backbones.read_state_dict` calls it for those suffixes."""

import re

import numpy as np


def read_pth(path):
    """A `torch.save`d state dict (or a checkpoint dict with a "state_dict" entry) as
    `{key: numpy array}`; ValueError naming the file for anything else, ImportError without torch."""
    import torch  # here, not at the top: the caller turns a missing torch into advice

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"could not read {path!r} with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{_gist(e)}); save the model's state_dict(), not the model object"
        ) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state dict")
    return {k: np.asarray(v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy())
            for k, v in state.items() if hasattr(v, "detach")}


def _gist(error):
    """The line of a `torch.load` error that says what was wrong. torch's weights-only message
    runs to a dozen lines with terminal colour codes; its "Unsupported global: ..." line names
    the pickled class."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    named = [line for line in lines if "Unsupported global" in line]
    gist = (named or lines or [""])[0]
    return gist if len(gist) <= 300 else gist[:297] + "..."

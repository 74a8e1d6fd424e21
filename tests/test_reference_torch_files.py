"""ssd_keras.reference.torch_files.read_pth: state dicts and checkpoints in, numpy out; anything
else is a ValueError naming the file. (Its use through `read_state_dict`: tests/test_backbones.py.)"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="reading .pth files needs torch (requirements-test.txt)")

from ssd_keras.reference.torch_files import read_pth  # noqa: E402


def test_a_state_dict_becomes_numpy_arrays_with_their_values(tmp_path):
    conv = torch.nn.Conv2d(3, 4, 3)
    bn = torch.nn.BatchNorm2d(4)
    state = {**{f"conv.{k}": v for k, v in conv.state_dict().items()},
             **{f"bn.{k}": v for k, v in bn.state_dict().items()},
             "half": torch.arange(6, dtype=torch.float16).reshape(2, 3)}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    got = read_pth(str(path))
    assert set(got) == set(state)
    np.testing.assert_array_equal(got["conv.weight"], conv.weight.detach().numpy())
    # Floating tensors come out float32 (half included); integer ones keep their type.
    assert got["half"].dtype == np.float32 and got["half"][1, 2] == 5.0
    assert got["bn.num_batches_tracked"].dtype == np.int64


def test_a_checkpoint_dict_gives_its_state_dict(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {"w": torch.ones(2)}}, path)
    assert list(read_pth(str(path))) == ["w"]


def test_not_a_state_dict_is_named(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(1)], path)
    with pytest.raises(ValueError, match=r"list\.pth' holds a list, not a state dict"):
        read_pth(str(path))
    # A whole pickled module is refused by weights_only loading, with the advice to save weights.
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ValueError, match=r"model\.pth.*Unsupported global: GLOBAL torch\.nn\.modules\.linear\.Linear"
                                         r".*\); save the model's state_dict\(\), not the model object") as caught:
        read_pth(str(path))
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)  # one line, no colour codes
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"could not read .*junk\.pth"):
        read_pth(str(path))

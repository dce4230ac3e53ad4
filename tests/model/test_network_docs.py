"""``help(Network)`` shows darknet-py's own text, and the public methods say what they do."""
import pydoc

import pytest

from darknet_py.model.network import Network


def test_help_network_is_darknet_pys_text():
    text = pydoc.render_doc(Network, renderer=pydoc.plaintext)
    assert "A Darknet network built from a .cfg" in text.split("Methods defined here")[0]


@pytest.mark.parametrize("name", ["from_cfg", "from_files", "load_weights", "save_weights",
                                  "print_table", "forward", "fuse", "table"])
def test_public_methods_have_docstrings(name):
    doc = getattr(Network, name).__doc__ or ""
    assert len(doc.split()) >= 8, name
    base = getattr(Network.__mro__[1], name, None)   # torch.nn.Module's forward, ...
    assert base is None or doc != base.__doc__, name

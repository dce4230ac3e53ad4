"""Darknet's file formats, below everything that builds a network: the ``.cfg`` text
(:mod:`.cfg`: the one tokenizer, typed sections, the in-place editor), the ``[net]`` options
(:mod:`.netconfig`) and the ``.weights`` binary (:mod:`.weights`)."""

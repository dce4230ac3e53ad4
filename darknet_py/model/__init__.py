"""The network as Darknet defines it: cfg text (:mod:`.cfg`), ``[net]`` options (:mod:`.netconfig`),
the layer graph (:mod:`.network`) and the ``.weights`` file format (:mod:`.weights`)."""

"""The network as Darknet builds it from a cfg: the layer graph that runs and loads/saves its
weights (:mod:`.network`). The file formats it reads are in :mod:`darknet_py.formats`."""

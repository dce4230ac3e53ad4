"""One module per Darknet section type; :mod:`.registry` is the table of them."""

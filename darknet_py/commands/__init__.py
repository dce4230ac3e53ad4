"""One module per command. Each defines ``COMMAND`` (click) and ``GROUP`` (see ``cli.py``)."""
